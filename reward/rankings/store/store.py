"""The store's Python API: what sampling, import, the ranking app and the export call. No SQL outside this package.

This module opens the store (migrating it), runs transactions, keeps project settings (N) and adds
tasks; the concurrency rules of leases and rankings are in work.py, people in accounts.py, reads in
reports.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from alignment.common.errors import UserError
from alignment.common.files import disk_error
from reward.rankings.store.accounts import Accounts
from reward.rankings.store.engine import make_engine, migrate, redact
from reward.rankings.store.errors import StoreFull
from reward.rankings.store.group import GroupCommit
from reward.rankings.store.models import AuditLog, Completion, GoldAnswer, Lease, Prompt, Setting, Task
from reward.rankings.store.quality import Quality
from reward.rankings.store.reports import Reports
from reward.rankings.store.work import Work


def canonical_prompt(prompt: str | list[dict]) -> tuple[str, bool]:
    """(text stored, is_chat): message lists are stored as canonical JSON."""
    if isinstance(prompt, str):
        return prompt, False
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        return json.dumps(msgs, ensure_ascii=False, separators=(",", ":")), True
    raise UserError("prompt must be a string or a list of {'role', 'content'} messages")


def _prepare_task(where: str, task: dict) -> tuple:
    """Validate one task and compute its idempotency key: (key, prompt text, is_chat, completions, meta, priority,
    kind): kind holds a campaign task's `campaign_id` and `annotators`, a gold task's `gold` ranks (store/quality.py)."""
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
    priority = task.get("priority")
    priority = 0.0 if priority is None else priority
    if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not math.isfinite(priority):
        raise UserError(f"{where}priority must be a finite number, got {str(priority)[:40]!r}")
    kind = {k: task[k] for k in ("campaign_id", "annotators", "gold") if task.get(k) is not None}
    # Campaign and gold tasks never merge with a training task of the same texts (nor with each other).
    salt = [f"campaign:{kind['campaign_id']}"] if "campaign_id" in kind else ["gold"] if "gold" in kind else []
    key = _sha(*salt, text, *sorted(c["text"] for c in completions))
    return key, text, is_chat, completions, dict(task.get("meta") or {}), float(priority), kind


def task_key(prompt: str | list[dict], texts: list[str]) -> str:
    """The dedupe key of a task: its prompt and the set of its completion texts (order does not matter)."""
    return _sha(canonical_prompt(prompt)[0], *sorted(texts))


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\x00")
    return h.hexdigest()


class Store(Accounts, Reports, Work, Quality):
    """The ranking store. Accounts (users, sessions, tokens, login throttle), Reports (progress, admin, export
    reads), Work (leases, rankings, undo, skips, flags) and Quality (evaluation campaigns, gold tasks) hold the
    methods; this class owns opening, transactions, project settings and adding tasks."""

    def __init__(self, url_or_path: str, pool_size: int = 10, create: bool = True):
        self.url = str(url_or_path)
        if not create and "://" not in self.url and not os.path.isfile(self.url):
            raise UserError(f"{self.url}: ranking store not found (run `rlhf sample` first, or check the path)")
        self.engine = make_engine(self.url, pool_size=pool_size, create=create)
        # SQLite: every write transaction of this process goes through one group commit (group.py).
        self._group = GroupCommit(self.engine) if self.engine.dialect.name == "sqlite" else None
        self._content: dict[int, dict] = {}  # task id -> prompt and completions (immutable once added)
        try:
            migrate(self.engine)
        except DBAPIError as e:
            self.engine.dispose()
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e).splitlines()[0]
            raise UserError(f"{safe_url(self.url)}: cannot open the ranking store ({redact(reason)})") from None
        except UserError:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Session]:
        """An ORM transaction that commits on normal exit (for writes on SQLite: a unit of the group commit)."""
        with self._full_disk():
            if write and self._group is not None:
                with self._group.unit() as conn:
                    with Session(bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint") as s:
                        yield s
                        s.commit()
                return
            with Session(self.engine, expire_on_commit=False) as s:
                s.connection(execution_options={"write": write})
                yield s
                s.commit()

    @contextmanager
    def _full_disk(self) -> Iterator[None]:
        """A transaction that fails because the store's disk is full (SQLite: "database or disk is full",
        PostgreSQL: "could not extend file") raises StoreFull, one line that says so; other errors pass."""
        try:
            yield
        except DBAPIError as e:
            folder = os.path.dirname(self.engine.url.database or "") if self.engine.dialect.name == "sqlite" else None
            error = disk_error(e.orig or e, folder or None)
            if error is None or error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            reason = str(e.orig or e).strip().splitlines()[0]
            raise StoreFull(
                f"{safe_url(self.url)}: the disk holding the ranking store is full ({redact(reason)}); nothing was "
                "saved: free space and retry"
            ) from None

    @contextmanager
    def _conn(self, write: bool = False, durable: bool = True) -> Iterator[Connection]:
        """A Core transaction that commits on normal exit (SQLite writes: a unit of the group commit).

        durable=False (leases): PostgreSQL commits it without waiting for its WAL flush; see engine.py.
        """
        with self._full_disk():
            if write and self._group is not None:
                with self._group.unit() as conn:
                    yield conn
                return
            with self.engine.connect() as conn:
                if not write and self.engine.dialect.name == "postgresql":
                    # A read needs no transaction on PostgreSQL (one statement sees one snapshot anyway):
                    # autocommit saves the BEGIN and COMMIT round trips.
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    yield conn
                    return
                conn.execution_options(write=write, durable=durable)
                with conn.begin():
                    if not durable and self.engine.dialect.name == "postgresql":
                        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                    yield conn

    def _serialize(self, conn, kind: str, key: str) -> None:
        """Hold (kind, key) until this write transaction ends, so a read-then-write on that key (count, then
        insert) cannot interleave with another process's. SQLite needs nothing: its write transactions already
        run one at a time (BEGIN IMMEDIATE, and one group commit per process); PostgreSQL takes an advisory lock."""
        if self.engine.dialect.name == "postgresql":
            digest = hashlib.sha256(f"{kind}\0{key}".encode("utf-8", "surrogatepass")).digest()
            conn.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))

    def _audit(self, s, user_id: int | None, action: str, **detail: Any) -> None:
        """Append to the audit log in the caller's transaction (an ORM Session or a Core Connection)."""
        if isinstance(s, Session):
            s.add(AuditLog(at=time.time(), user_id=user_id, action=action, detail=detail))
        else:
            s.execute(insert(AuditLog).values(at=time.time(), user_id=user_id, action=action, detail=detail))

    # ------------------------------------------------------------------------------------------
    # Project settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        with self._conn() as c:
            value = c.scalar(select(Setting.value).where(Setting.key == key))
        return default if value is None else value.get("v", default)

    def set_setting(self, key: str, value: Any) -> None:
        with self._tx(write=True) as s:
            row = s.get(Setting, key)
            if row is None:
                s.add(Setting(key=key, value={"v": value}))
            elif row.value.get("v") != value:
                row.value = {"v": value}
                self._audit(s, None, "setting", key=key, value=value)

    def annotators_per_task(self, default: int = 1) -> int:
        """N, the distinct annotators each task gets, as the server last set it (`default` if never set)."""
        return int(self.get_setting("annotators_per_task", default))

    def set_annotators_per_task(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise UserError(f"annotators_per_task must be an integer >= 1, got {n!r}")
        self.set_setting("annotators_per_task", n)

    # ------------------------------------------------------------------------------------------
    # Tasks

    def add_task(
        self, prompt: str | list[dict], completions: list[dict], meta: dict | None = None, priority: float = 0.0
    ) -> int:
        """Add one prompt with its K completions (dicts with text, model, gen, seed); idempotent on the texts.

        priority: the task's acquisition score; the queue serves higher first within a fill level (default 0).
        """
        return self.add_tasks([{"prompt": prompt, "completions": completions, "meta": meta, "priority": priority}])[0]

    def add_tasks(self, tasks: list[dict]) -> list[int]:
        """add_task for many ({"prompt", "completions", "meta", "priority"?} dicts) in one transaction (one commit).

        Re-adding a task that exists keeps it as it is (its priority too)."""
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

    def _insert_task(self, s: Session, key, text, is_chat, completions, meta, priority, kind) -> int:
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
        task = Task(
            key=key,
            prompt_id=prompt_id,
            meta=meta,
            n_done=0,
            created_at=now,
            priority=priority,
            campaign_id=kind.get("campaign_id"),
            annotators=kind.get("annotators"),
            is_gold="gold" in kind,
        )
        s.add(task)
        s.flush()
        if "gold" in kind:
            s.add(GoldAnswer(task_id=task.id, ranks=kind["gold"], created_by=kind.get("by"), created_at=now))
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


def open_store(url_or_path: str, pool_size: int = 10, create: bool = True) -> Store:
    """Open (migrating if needed) a SQLite file path or a postgresql:// URL; create=False refuses a missing file."""
    return Store(url_or_path, pool_size=pool_size, create=create)


def safe_url(url: str) -> str:
    """The store URL without its password, for messages, saved configs and manifests."""
    return redact(url)
