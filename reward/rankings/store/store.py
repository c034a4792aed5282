"""The store's Python API: what sampling, the ranking app and the export call. No SQL outside this package.

Concurrency rules, enforced by the database rather than by the app process (so they hold with
several server processes and survive a crash):
- a task has one lease row; claiming it is a conditional UPDATE (free or expired), so two people
  never hold the same task, and an abandoned lease simply expires;
- a submit must come from the lease holder and raises `tasks.n_done` with `n_done < N` in the
  WHERE clause, so a task never gets more than N rankings; UNIQUE(task, annotator) means nobody
  ranks a task twice; UNIQUE(idempotency_key) makes a retried submit return the first result;
- a submit is acknowledged only after its transaction commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from alignment.config import UserError
from reward.rankings.store.accounts import Accounts
from reward.rankings.store.engine import make_engine, migrate
from reward.rankings.store.models import (
    AuditLog,
    Completion,
    Flag,
    Lease,
    Prompt,
    Ranking,
    Skip,
    Task,
)
from reward.rankings.store.reports import Reports

FLAG_KINDS = ("unsafe", "all_bad", "not_rankable")


class Conflict(Exception):
    """A request the current state refuses (lease lost, task complete, already ranked); HTTP 409."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class InvalidRanking(ValueError):
    """Ranks that do not fit the task (wrong length, values, ties when not allowed); HTTP 422."""


@dataclass
class TaskView:
    """A leased task as one annotator sees it: completions in the (random) order shown."""

    task_id: int
    view_id: str
    prompt: str | list[dict]
    is_chat: bool
    completions: list[dict]
    """[{"position": int, "text": str}, ...] in the order shown."""
    expires_at: float
    meta: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "task_id": self.task_id,
            "view_id": self.view_id,
            "prompt": self.prompt,
            "is_chat": self.is_chat,
            "completions": self.completions,
            "expires_at": self.expires_at,
        }


def canonical_prompt(prompt: str | list[dict]) -> tuple[str, bool]:
    """(text stored, is_chat): message lists are stored as canonical JSON."""
    if isinstance(prompt, str):
        return prompt, False
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        return json.dumps(msgs, ensure_ascii=False, separators=(",", ":")), True
    raise UserError("prompt must be a string or a list of {'role', 'content'} messages")


def normalize_ranks(ranks: list[int], k: int, allow_ties: bool) -> list[int]:
    """Validate client ranks (lower = better) and return standard competition ranks: 1 = best, ties share (1, 1, 3)."""
    if not isinstance(ranks, list) or len(ranks) != k:
        raise InvalidRanking(f"expected {k} ranks, got {ranks!r}")
    if not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= k for r in ranks):
        raise InvalidRanking(f"ranks must be integers from 1 to {k}, got {ranks!r}")
    if not allow_ties and len(set(ranks)) != k:
        raise InvalidRanking("ties are not allowed in this project")
    return [1 + sum(other < r for other in ranks) for r in ranks]


def _prepare_task(where: str, task: dict) -> tuple:
    """Validate one task and compute its idempotency key: (key, prompt text, is_chat, completions, meta)."""
    try:
        text, is_chat = canonical_prompt(task.get("prompt"))
    except UserError as e:
        raise UserError(f"{where}{e}") from None
    completions = task.get("completions") or []
    if len(completions) < 2:
        raise UserError(f"{where}a task needs at least 2 completions, got {len(completions)}")
    for i, c in enumerate(completions):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            raise UserError(f"{where}completion {i} must be a dict with a 'text' string")
    key = _sha(text, *sorted(c["text"] for c in completions))
    return key, text, is_chat, completions, dict(task.get("meta") or {})


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\x00")
    return h.hexdigest()


class Store(Accounts, Reports):
    """The ranking store. Accounts (users, sessions, tokens) and Reports (progress, admin, export reads) hold
    the methods that only read or manage people; this class owns tasks, leases and rankings."""

    def __init__(self, url_or_path: str, pool_size: int = 10, create: bool = True):
        self.url = str(url_or_path)
        if not create and "://" not in self.url and not os.path.isfile(self.url):
            raise UserError(f"{self.url}: ranking store not found (run `rlhf sample` first, or check the path)")
        self.engine = make_engine(self.url, pool_size=pool_size)
        self._sqlite_writer = threading.Lock() if self.engine.dialect.name == "sqlite" else None
        try:
            migrate(self.engine)
        except OperationalError as e:
            self.engine.dispose()
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e).splitlines()[0]
            raise UserError(f"{safe_url(self.url)}: cannot open the ranking store ({reason})") from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Session]:
        """A transaction that commits on normal exit (BEGIN IMMEDIATE for writes on SQLite)."""
        # SQLite has one writer at a time anyway; queueing this process's writers on a lock is far
        # faster and fairer under load than letting each thread poll the database lock with sleeps.
        lock = self._sqlite_writer if write and self._sqlite_writer is not None else contextlib.nullcontext()
        with lock, Session(self.engine, expire_on_commit=False) as s:
            s.connection(execution_options={"write": write})
            yield s
            s.commit()

    def _audit(self, s: Session, user_id: int | None, action: str, **detail: Any) -> None:
        s.add(AuditLog(at=time.time(), user_id=user_id, action=action, detail=detail))

    # ------------------------------------------------------------------------------------------
    # Tasks

    def add_task(self, prompt: str | list[dict], completions: list[dict], meta: dict | None = None) -> int:
        """Add one prompt with its K completions (dicts with text, model, gen, seed); idempotent on the texts."""
        return self.add_tasks([{"prompt": prompt, "completions": completions, "meta": meta}])[0]

    def add_tasks(self, tasks: list[dict]) -> list[int]:
        """add_task for many ({"prompt", "completions", "meta"} dicts) in one transaction: one commit, not one each."""
        prepared = [_prepare_task(f"task {i}: " if len(tasks) > 1 else "", t) for i, t in enumerate(tasks)]
        for attempt in range(3):
            try:
                with self._tx(write=True) as s:
                    return [self._insert_task(s, *p) for p in prepared]
            except IntegrityError:
                # Another process added the same prompt or task between our SELECT and INSERT: look again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _insert_task(self, s: Session, key, text, is_chat, completions, meta) -> int:
        found = s.scalar(select(Task.id).where(Task.key == key))
        if found is not None:
            return found
        now = time.time()
        prompt_hash = _sha(text)
        prompt_id = s.scalar(select(Prompt.id).where(Prompt.hash == prompt_hash))
        if prompt_id is None:
            p = Prompt(hash=prompt_hash, text=text, is_chat=is_chat, created_at=now)
            s.add(p)
            s.flush()
            prompt_id = p.id
        task = Task(key=key, prompt_id=prompt_id, meta=meta, n_done=0, created_at=now)
        s.add(task)
        s.flush()
        for pos, c in enumerate(completions):
            s.add(
                Completion(
                    task_id=task.id,
                    position=pos,
                    text=c["text"],
                    model=str(c.get("model", "")),
                    gen=dict(c.get("gen") or {}),
                    seed=c.get("seed"),
                )
            )
        s.add(Lease(task_id=task.id, user_id=None, acquired_at=0.0, expires_at=0.0))
        s.flush()
        return task.id

    def count_tasks(self) -> int:
        with self._tx() as s:
            return s.scalar(select(func.count(Task.id))) or 0

    def _view(self, s: Session, task_id: int, lease: Lease) -> TaskView:
        task = s.get(Task, task_id)
        prompt = s.get(Prompt, task.prompt_id)
        comps = {c.position: c for c in s.scalars(select(Completion).where(Completion.task_id == task_id))}
        shown = [{"position": pos, "text": comps[pos].text} for pos in lease.order_shown]
        return TaskView(
            task_id=task_id,
            view_id=lease.view_id,
            prompt=json.loads(prompt.text) if prompt.is_chat else prompt.text,
            is_chat=prompt.is_chat,
            completions=shown,
            expires_at=lease.expires_at,
            meta=task.meta or {},
        )

    def next_task(self, user_id: int, n_per_task: int, lease_seconds: float, rng: random.Random | None = None):
        """Lease the next task this user may rank (or renew the one they hold); None when there is none."""
        rng = rng or random.Random()
        now = time.time()
        with self._tx(write=True) as s:
            held = s.scalars(
                select(Lease).where(Lease.user_id == user_id, Lease.expires_at > now).order_by(Lease.acquired_at)
            ).first()
            if held is not None:
                held.expires_at = now + lease_seconds
                return self._view(s, held.task_id, held)
            candidates = self._candidates(s, user_id, n_per_task, now)
            # Concurrent annotators would all race for the first candidate; a little shuffling spreads them.
            head = list(candidates[:8])
            rng.shuffle(head)
            for task_id in head + list(candidates[8:]):
                k = s.scalar(select(func.count(Completion.id)).where(Completion.task_id == task_id))
                order = list(range(k))
                rng.shuffle(order)
                claimed = s.execute(
                    update(Lease)
                    .where(Lease.task_id == task_id, (Lease.user_id.is_(None)) | (Lease.expires_at <= now))
                    .values(
                        user_id=user_id,
                        view_id=secrets.token_hex(8),
                        order_shown=order,
                        acquired_at=now,
                        expires_at=now + lease_seconds,
                    )
                    .execution_options(synchronize_session=False)
                )
                if claimed.rowcount != 1:
                    continue
                # PostgreSQL (READ COMMITTED): the holder we waited for may have just submitted the N-th
                # ranking and freed the lease; this new statement sees that commit, so check before handing out.
                if s.scalar(select(Task.n_done).where(Task.id == task_id)) >= n_per_task:
                    self._release(s, task_id, user_id)
                    continue
                lease = s.get(Lease, task_id, populate_existing=True)
                return self._view(s, task_id, lease)
            return None

    def renew(self, user_id: int, task_id: int, lease_seconds: float) -> bool:
        """Extend the user's lease on a task (the page's heartbeat); False if it is no longer theirs."""
        with self._tx(write=True) as s:
            done = s.execute(
                update(Lease)
                .where(Lease.task_id == task_id, Lease.user_id == user_id)
                .values(expires_at=time.time() + lease_seconds)
                .execution_options(synchronize_session=False)
            )
            return done.rowcount == 1

    def _candidates(self, s: Session, user_id: int, n_per_task: int, now: float, limit: int = 32) -> list[int]:
        """Free tasks this user may rank, fullest first (so overlap sets complete early), then oldest.

        One query per fill level `n_done = level`, each walking the (n_done, id) index in order and
        stopping after `limit` hits, instead of sorting every open task on each request.
        """
        found: list[int] = []
        for level in range(n_per_task - 1, -1, -1):
            found += s.scalars(
                select(Task.id)
                .join(Lease, Lease.task_id == Task.id)
                .where(
                    Task.n_done == level,
                    (Lease.user_id.is_(None)) | (Lease.expires_at <= now),
                    ~exists().where(Ranking.task_id == Task.id, Ranking.annotator_id == user_id),
                    ~exists().where(Skip.task_id == Task.id, Skip.user_id == user_id),
                    ~exists().where(Flag.task_id == Task.id, Flag.user_id == user_id),
                )
                .order_by(Task.id)
                .limit(limit - len(found))
                # PostgreSQL: lock the free lease rows we look at and skip rows others are claiming, so two
                # claimers never wait on each other (no deadlock) and spread over different tasks. SQLite
                # ignores this; its write transactions are serialized anyway.
                .with_for_update(of=Lease, skip_locked=True)
            ).all()
            if len(found) >= limit:
                break
        return found

    def _release(self, s: Session, task_id: int, user_id: int) -> None:
        s.execute(
            update(Lease)
            .where(Lease.task_id == task_id, Lease.user_id == user_id)
            .values(user_id=None, view_id=None, order_shown=None, expires_at=0.0)
            .execution_options(synchronize_session=False)
        )

    def submit(
        self,
        user_id: int,
        task_id: int,
        ranks: list[int],
        idempotency_key: str,
        n_per_task: int,
        allow_ties: bool = True,
    ) -> dict:
        """Commit one ranking; returns {"ranking_id", "task_id", "ranks", "replay"}. A retried key returns the first."""
        if not idempotency_key or len(idempotency_key) > 128:
            raise InvalidRanking("idempotency_key must be 1-128 characters")
        try:
            with self._tx(write=True) as s:
                prior = self._by_key(s, idempotency_key, user_id)
                if prior is not None:
                    return prior
                lease = s.scalars(select(Lease).where(Lease.task_id == task_id).with_for_update()).first()
                if lease is None:
                    raise Conflict("no_task", f"task {task_id} does not exist")
                if lease.user_id != user_id:
                    # An expired lease still counts as ours until somebody else claims the task.
                    raise Conflict("lease_lost", f"you do not hold task {task_id} (lease expired and taken)")
                k = len(lease.order_shown or [])
                norm = normalize_ranks(ranks, k, allow_ties)
                bumped = s.execute(
                    update(Task)
                    .where(Task.id == task_id, Task.n_done < n_per_task)
                    .values(n_done=Task.n_done + 1)
                    .execution_options(synchronize_session=False)
                )
                if bumped.rowcount != 1:
                    # Commit the release (raising inside the transaction would roll it back and leave the
                    # user holding a task they can never submit until the lease expires).
                    self._release(s, task_id, user_id)
                    result = None
                else:
                    result = self._insert_ranking(s, user_id, task_id, norm, idempotency_key, lease)
            if result is None:
                raise Conflict("task_complete", f"task {task_id} already has {n_per_task} rankings")
            return result
        except IntegrityError:
            # A concurrent retry with the same key committed first, or this user already ranked the task.
            with self._tx() as s:
                prior = self._by_key(s, idempotency_key, user_id)
            if prior is not None:
                return prior
            raise Conflict("already_ranked", f"you already ranked task {task_id}") from None

    def _insert_ranking(self, s: Session, user_id: int, task_id: int, ranks: list[int], key: str, lease: Lease) -> dict:
        now = time.time()
        r = Ranking(
            task_id=task_id,
            annotator_id=user_id,
            idempotency_key=key,
            ranks=ranks,
            order_shown=list(lease.order_shown),
            seconds=max(0.0, now - lease.acquired_at),
            created_at=now,
        )
        s.add(r)
        self._release(s, task_id, user_id)
        s.flush()
        self._audit(s, user_id, "submit", task_id=task_id, ranking_id=r.id)
        return {"ranking_id": r.id, "task_id": task_id, "ranks": ranks, "replay": False}

    def _by_key(self, s: Session, key: str, user_id: int) -> dict | None:
        r = s.scalars(select(Ranking).where(Ranking.idempotency_key == key)).first()
        if r is None:
            return None
        if r.annotator_id != user_id:
            raise Conflict("key_reused", "idempotency key belongs to another user's ranking")
        return {"ranking_id": r.id, "task_id": r.task_id, "ranks": r.ranks, "replay": True}

    def skip(self, user_id: int, task_id: int) -> None:
        """Give the task back and never offer it to this user again."""
        with self._tx(write=True) as s:
            if not s.scalar(select(exists().where(Skip.task_id == task_id, Skip.user_id == user_id))):
                s.add(Skip(task_id=task_id, user_id=user_id, created_at=time.time()))
            self._release(s, task_id, user_id)
            self._audit(s, user_id, "skip", task_id=task_id)

    def flag(self, user_id: int, task_id: int, kind: str, comment: str = "") -> int:
        """Record a flag (unsafe / all_bad / not_rankable) and give the task back, like a skip."""
        if kind not in FLAG_KINDS:
            raise InvalidRanking(f"flag kind must be one of {', '.join(FLAG_KINDS)}, got {kind!r}")
        with self._tx(write=True) as s:
            if s.get(Task, task_id) is None:
                raise Conflict("no_task", f"task {task_id} does not exist")
            f = Flag(task_id=task_id, user_id=user_id, kind=kind, comment=str(comment)[:2000], created_at=time.time())
            s.add(f)
            self._release(s, task_id, user_id)
            s.flush()
            self._audit(s, user_id, "flag", task_id=task_id, kind=kind)
            return f.id


def open_store(url_or_path: str, pool_size: int = 10, create: bool = True) -> Store:
    """Open (migrating if needed) a SQLite file path or a postgresql:// URL; create=False refuses a missing file."""
    return Store(url_or_path, pool_size=pool_size, create=create)


def safe_url(url: str) -> str:
    """The store URL without its password, for messages and manifests."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
