"""Store methods for the work itself: leasing tasks, rankings (submit, undo, revise), skips and flags.

Concurrency rules, enforced by the database rather than by the app process (so they hold with
several server processes and survive a crash):
- a task has one lease row; claiming it is a conditional UPDATE (free or expired), so two people
  never hold the same task, and an abandoned lease simply expires;
- a submit must come from the lease holder and raises `tasks.n_done` with `n_done < N` in the
  WHERE clause, so a task never gets more than N rankings; UNIQUE(task, annotator) means nobody
  ranks a task twice; UNIQUE(idempotency_key) makes a retried submit return the first result;
- an undo never gives a slot back: the ranking keeps its place among the N and the annotator's next
  submit on that task replaces its ranks in the same row (never a second row), so exactly-N holds and
  an export running meanwhile reads either the old ranks or the new ones;
- a flag comes from the task's lease holder (or an admin), once per person and task;
- a submit is acknowledged only after its transaction commits (durably, see engine.py).

These are the server's hot paths, so they use SQLAlchemy Core (no ORM identity map) and keep each
request to one transaction; a task's prompt and completions never change, so they are cached.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from reward.rankings.store.errors import Conflict, InvalidRanking, NotFound
from reward.rankings.store.models import Completion, Flag, Lease, Prompt, Ranking, Skip, Task
from reward.rankings.store.sql import Raw, dump, load

FLAG_KINDS = ("unsafe", "all_bad", "not_rankable")
MAX_ID = 2**63 - 1
MAX_N_TTL_S = 2.0
GOLD_N = 2**31 - 1
"""The N gold tasks are claimed and submitted with: no limit on how many people answer one."""
CONTENT_CACHE = 20_000


@dataclass
class TaskView:
    """A leased task as one annotator sees it: completions in the (random) order shown."""

    task_id: int
    view_id: str
    prompt: str | list[dict]
    is_chat: bool
    completions: list[dict]
    """[{"position": int, "text": str}, ...] in the order shown (plus "model" when the task shows models)."""
    expires_at: float
    meta: dict = field(default_factory=dict)
    revise: dict | None = None
    """After an undo: {"ranking_id", "ranks", "until"}; the next submit on the task replaces that ranking."""

    def as_json(self) -> dict:
        return {
            "task_id": self.task_id,
            "view_id": self.view_id,
            "prompt": self.prompt,
            "is_chat": self.is_chat,
            "completions": self.completions,
            "expires_at": self.expires_at,
            # Relative, so a client whose clock is off still counts down correctly.
            "expires_in": max(0.0, self.expires_at - time.time()),
            "revise": self.revise,
        }


def normalize_ranks(ranks: list[int], k: int, allow_ties: bool) -> list[int]:
    """Validate client ranks (lower = better) and return standard competition ranks: 1 = best, ties share (1, 1, 3)."""
    shown = repr(ranks) if len(repr(ranks)) <= 80 else repr(ranks)[:77] + "..."
    if not isinstance(ranks, list) or len(ranks) != k:
        raise InvalidRanking(f"expected {k} ranks, got {shown}")
    if not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= k for r in ranks):
        raise InvalidRanking(f"ranks must be integers from 1 to {k}, got {shown}")
    if not allow_ties and len(set(ranks)) != k:
        raise InvalidRanking("ties are not allowed in this project")
    return [1 + sum(other < r for other in ranks) for r in ranks]


def check_id(what: str, value) -> int:
    """An id a client sent: NotFound (404) for anything no row can have (0, negative, beyond 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise NotFound(f"no {what} {value}")
    return value


class Work:
    """Mixed into Store (which provides `_conn`, `_audit` and `_content`)."""

    # ------------------------------------------------------------------------------------------
    # Reading a task

    def _task_content(self, c: Connection, task_id: int) -> dict:
        """Prompt, completions and meta of a task (immutable, so cached per process)."""
        got = self._content.get(task_id)
        if got is not None:
            return got
        row = c.execute(
            select(Prompt.text, Prompt.is_chat, Task.meta, Task.is_gold)
            .join(Task, Task.prompt_id == Prompt.id)
            .where(Task.id == task_id)
        ).first()
        if row is None:
            raise NotFound(f"no task {task_id}")
        import json

        comps = c.execute(
            select(Completion.text, Completion.model).where(Completion.task_id == task_id).order_by(Completion.position)
        ).all()
        meta = dict(row.meta or {})
        got = {
            "prompt": json.loads(row.text) if row.is_chat else row.text,
            "is_chat": bool(row.is_chat),
            "texts": [t for t, _ in comps],
            "models": [m for _, m in comps],
            "meta": meta,
            # Never in a blind campaign; the policy names stay in the meta, which no annotator route returns.
            "show_models": bool(meta.get("show_models")) and "campaign" not in meta,
            "gold": bool(row.is_gold),  # decides N at submit; never part of a view
        }
        if len(self._content) >= CONTENT_CACHE:
            self._content.clear()
        self._content[task_id] = got
        return got

    def _make_view(self, content: dict, task_id: int, view_id, order: list[int], expires_at: float) -> TaskView:
        shown = []
        for pos in order:
            item = {"position": pos, "text": content["texts"][pos]}
            if content["show_models"]:
                item["model"] = content["models"][pos]
            shown.append(item)
        return TaskView(
            task_id=task_id,
            view_id=view_id or "",
            prompt=content["prompt"],
            is_chat=content["is_chat"],
            completions=shown,
            expires_at=expires_at,
            meta=content["meta"],
        )

    # ------------------------------------------------------------------------------------------
    # Leases

    def next_task(self, user_id: int, n_per_task: int, lease_seconds: float, rng: random.Random | None = None):
        """Lease the next task this user may rank (or renew the one they hold); None when there is none."""
        return self.lease_next(user_id, n_per_task, lease_seconds, rng)[0]

    def lease_next(
        self, user_id: int, n_per_task: int, lease_seconds: float, rng: random.Random | None = None, progress=False
    ) -> tuple[TaskView | None, dict | None]:
        """(next_task's view, the user's progress when asked) in one transaction."""
        rng = rng or random.Random()
        now = time.time()
        # Not durable: a lease lost to a power cut only means the task is free again (engine.py).
        with self._conn(write=True, durable=False) as c:
            view = self._held(c, user_id, now, lease_seconds)
            if view is None:
                view = self._claim(c, user_id, n_per_task, now, lease_seconds, rng)
            done = self._progress(c, user_id, n_per_task, approximate=view is not None) if progress else None
        return view, done

    def _held(self, c: Connection, user_id: int, now: float, lease_seconds: float) -> TaskView | None:
        held = Raw(c).one("held", user=user_id, now=now, until=now + lease_seconds)
        if held is None:
            return None
        task_id, view_id, order = held
        content = self._task_content(c, task_id)
        return self._make_view(content, task_id, view_id, list(load(order)), now + lease_seconds)

    def _claim(self, c: Connection, user_id, n_per_task, now, lease_seconds, rng) -> TaskView | None:
        raw = Raw(c)
        gold = self.gold_policy()
        if gold.pause_below and self._paused(c, user_id, gold):
            return None
        # SQLite serializes writers, so the first free candidate is always claimable; PostgreSQL claimers
        # run at once, so look at a few and spread them, among those of the highest priority only (the
        # acquisition score decides what is ranked first; among equals, spreading avoids collisions).
        candidates = self._candidates(c, user_id, n_per_task, now, limit=4 if raw.pg else 1)
        # Gold tasks at the gold rate, only while there is other work: they are mixed into a queue, never all of it.
        if candidates and gold.rate > 0 and rng.random() < gold.rate:
            query = "candidates_gold_pg" if raw.pg else "candidates_gold"
            found = raw.all(query, gold=True, now=now, user=user_id, limit=4 if raw.pg else 1)
            if found:
                candidates, n_per_task = [(r[0], r[1]) for r in found], GOLD_N
        top = [task_id for task_id, priority in candidates if priority == candidates[0][1]]
        rng.shuffle(top)
        for task_id in top + [task_id for task_id, _ in candidates[len(top) :]]:
            content = self._task_content(c, task_id)
            order = list(range(len(content["texts"])))
            rng.shuffle(order)
            view_id = secrets.token_hex(8)
            params = dict(user=user_id, view=view_id, order=dump(order), now=now, until=now + lease_seconds)
            if raw.run("claim", task=task_id, n=n_per_task, **params) != 1:
                continue
            return self._make_view(content, task_id, view_id, order, now + lease_seconds)
        return None

    def renew(self, user_id: int, task_id: int, lease_seconds: float) -> float | None:
        """Extend the user's lease on a task (the page's heartbeat and its Renew button).

        Returns the new expiry time, or None if the task is no longer theirs; NotFound for no such task.
        """
        check_id("task", task_id)
        until = time.time() + lease_seconds
        with self._conn(write=True, durable=False) as c:
            done = c.execute(
                update(Lease).where(Lease.task_id == task_id, Lease.user_id == user_id).values(expires_at=until)
            )
            if done.rowcount == 1:
                return until
            if c.scalar(select(Lease.task_id).where(Lease.task_id == task_id)) is None:
                raise NotFound(f"no task {task_id}")
            return None

    def release(self, user_id: int, task_id: int) -> bool:
        """Give back the user's lease on a task without skipping it (it may be offered to them again): what a
        scripted annotator does when its scoring function fails. False when they do not hold it; NotFound for no
        such task."""
        check_id("task", task_id)
        with self._conn(write=True, durable=False) as c:
            if Raw(c).run("release", task=task_id, user=user_id) == 1:
                return True
            if c.scalar(select(Lease.task_id).where(Lease.task_id == task_id)) is None:
                raise NotFound(f"no task {task_id}")
            return False

    def _candidates(self, c: Connection, user_id: int, n_per_task: int, now: float, limit: int = 32) -> list[tuple]:
        """(id, priority) of free tasks this user may rank: fullest first (so overlap sets complete early), then
        highest priority (the acquisition score), then oldest.

        One query per fill level `n_done = level` (from the fullest down, stopping at the first level with
        free tasks), each walking the (n_done, priority DESC, id) index in order and stopping after `limit` hits, instead
        of sorting every open task on each request.
        """
        raw = Raw(c)
        # Campaign tasks may ask for more annotators than the store's N: their fill levels come first.
        top = max(n_per_task, self._max_annotators(raw))
        found: list[tuple] = []
        for level in range(top - 1, -1, -1):
            query = "candidates" if level < n_per_task else "candidates_above"
            query += "_pg" if raw.pg else ""
            found += [
                (r[0], r[1]) for r in raw.all(query, level=level, now=now, user=user_id, limit=limit - len(found))
            ]
            if found:  # the fullest level with free tasks is enough
                break
        return found

    def _max_annotators(self, raw: Raw) -> int:
        """The largest N any task asks for (0: none has its own), re-read every MAX_N_TTL_S: a statement less per
        lease, and a campaign another process adds is served within that time."""
        cached = getattr(self, "_max_n", None)
        if cached is None or time.monotonic() - cached[0] > MAX_N_TTL_S:
            cached = self._max_n = (time.monotonic(), raw.one("max_annotators")[0] or 0)
        return cached[1]

    def _release(self, c: Connection, task_id: int, user_id: int) -> None:
        Raw(c).run("release", task=task_id, user=user_id)

    # ------------------------------------------------------------------------------------------
    # Rankings

    def submit(
        self,
        user_id: int,
        task_id: int,
        ranks: list[int],
        idempotency_key: str,
        n_per_task: int,
        allow_ties: bool = True,
        then_lease: tuple[float, random.Random] | None = None,
    ) -> dict:
        """Commit one ranking; returns {"ranking_id", "task_id", "ranks", "replay"}. A retried key returns the first.

        After an undo (within its window) the same call replaces the annotator's ranking of that task instead.
        then_lease=(lease_seconds, rng): also lease the user's next task in the same transaction (one commit
        per ranking instead of two); the result then holds "next": (view or None, progress).
        """
        if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 128:
            raise InvalidRanking("idempotency_key must be 1-128 characters")
        check_id("task", task_id)
        try:
            with self._conn(write=True) as c:
                result = self._submit(c, user_id, task_id, ranks, idempotency_key, n_per_task, allow_ties)
                if result is not None and then_lease is not None:
                    now = time.time()
                    lease_seconds, rng = then_lease
                    view = self._held(c, user_id, now, lease_seconds)
                    view = view or self._claim(c, user_id, n_per_task, now, lease_seconds, rng)
                    result["next"] = (view, self._progress(c, user_id, n_per_task, approximate=view is not None))
            if result is None:
                raise Conflict("task_complete", f"task {task_id} already has {n_per_task} rankings")
            return result
        except IntegrityError:
            # A concurrent retry with the same key committed first, or this user already ranked the task.
            with self._conn() as c:
                prior = self._by_key(c, idempotency_key, user_id)
            if prior is not None:
                return prior
            raise Conflict("already_ranked", f"you already ranked task {task_id}") from None

    def _submit(self, c: Connection, user_id, task_id, ranks, key, n_per_task, allow_ties) -> dict | None:
        raw = Raw(c)
        own = None
        for row in raw.all("key_or_own", key=key, task=task_id, user=user_id):
            if row[4] == key:  # a retry: the first result, never a second ranking
                if row[3] != user_id:
                    raise Conflict("key_reused", "idempotency key belongs to another user's ranking")
                return {"ranking_id": row[0], "task_id": row[1], "ranks": list(load(row[2])), "replay": True}
            own = (row[0], row[5], row[6])
        now = time.time()
        if own is not None:
            if own[1] is None or own[1] < now:
                raise Conflict("already_ranked", f"you already ranked task {task_id}")
            return self._revise(c, user_id, task_id, own, ranks, key, allow_ties)
        if self._task_content(c, task_id)["gold"]:
            n_per_task = GOLD_N  # everyone may answer a gold task (once each)
        record = self._record_pg if raw.pg else self._record_sqlite
        ranking_id, norm = record(raw, user_id, task_id, ranks, key, n_per_task, allow_ties, now)
        if ranking_id is None:
            return None  # complete: the lease was given back in the same transaction
        # No audit row per submit: the ranking row is that record (who, when, which task); undo/revise are logged.
        return {"ranking_id": ranking_id, "task_id": task_id, "ranks": norm, "replay": False}

    def _record_sqlite(self, raw: Raw, user_id, task_id, ranks, key, n_per_task, allow_ties, now):
        lease = raw.one("lease_of_task", task=task_id)
        if lease is None:
            raise NotFound(f"no task {task_id}")
        holder, order_shown, acquired_at = lease
        if holder != user_id:
            # An expired lease still counts as ours until somebody else claims the task.
            raise Conflict("lease_lost", f"you do not hold task {task_id} (lease expired and taken)")
        order = load(order_shown) or []
        norm = normalize_ranks(ranks, len(order), allow_ties)
        if raw.run("bump", task=task_id, n=n_per_task) != 1:
            # Commit the release (raising inside the transaction would roll it back and leave the
            # user holding a task they can never submit until the lease expires).
            raw.run("release", task=task_id, user=user_id)
            return None, norm
        seconds = max(0.0, now - acquired_at)
        params = dict(task=task_id, user=user_id, key=key, ranks=dump(norm), order=dump(order), seconds=seconds)
        ranking_id = raw.one("insert_ranking", now=now, **params)[0]
        raw.run("release", task=task_id, user=user_id)
        return ranking_id, norm

    def _record_pg(self, raw: Raw, user_id, task_id, ranks, key, n_per_task, allow_ties, now):
        # K from the task's (cached) completions, so bad ranks are refused before anything is written.
        k = len(self._task_content(raw.conn, task_id)["texts"])
        norm = normalize_ranks(ranks, k, allow_ties)
        ranking_id, held = raw.one(
            "submit", task=task_id, user=user_id, key=key, ranks=dump(norm), now=now, n=n_per_task
        )
        if not held:
            raise Conflict("lease_lost", f"you do not hold task {task_id} (lease expired and taken)")
        return ranking_id, norm

    def _revise(self, c: Connection, user_id, task_id, own, ranks, key, allow_ties) -> dict:
        raw = Raw(c)
        ranking_id, _, order_shown = own
        norm = normalize_ranks(ranks, len(load(order_shown)), allow_ties)
        raw.run("revise", ranks=dump(norm), key=key, id=ranking_id)
        detail = dump({"task_id": task_id, "ranking_id": ranking_id})
        raw.run("audit", now=time.time(), user=user_id, action="revise", detail=detail)
        return {"ranking_id": ranking_id, "task_id": task_id, "ranks": norm, "replay": False, "replaced": True}

    def _by_key(self, c: Connection, key: str, user_id: int) -> dict | None:
        r = Raw(c).one("ranking_by_key", key=key)
        if r is None:
            return None
        ranking_id, task_id, ranks, annotator_id = r
        if annotator_id != user_id:
            raise Conflict("key_reused", "idempotency key belongs to another user's ranking")
        return {"ranking_id": ranking_id, "task_id": task_id, "ranks": list(load(ranks)), "replay": True}

    def undo(self, user_id: int, ranking_id: int, undo_seconds: float, lease_seconds: float) -> TaskView:
        """Reopen the user's own ranking within `undo_seconds` of its submit: the task comes back with its
        ranks, and the user's next submit on it replaces them (within `lease_seconds`). 404 / 409 otherwise."""
        check_id("ranking", ranking_id)
        now = time.time()
        with self._conn(write=True) as c:
            r = c.execute(
                select(Ranking.task_id, Ranking.annotator_id, Ranking.created_at, Ranking.ranks, Ranking.order_shown)
                .where(Ranking.id == ranking_id)
                .with_for_update()
            ).first()
            if r is None or r.annotator_id != user_id:
                raise NotFound(f"no ranking {ranking_id} of yours")
            if now > r.created_at + undo_seconds:
                raise Conflict("undo_expired", f"ranking {ranking_id} can no longer be undone ({undo_seconds:g} s)")
            until = now + lease_seconds
            c.execute(update(Ranking).where(Ranking.id == ranking_id).values(revisable_until=until))
            self._audit(c, user_id, "undo", task_id=r.task_id, ranking_id=ranking_id)
            content = self._task_content(c, r.task_id)
        view = self._make_view(content, r.task_id, None, list(r.order_shown), until)
        view.revise = {"ranking_id": ranking_id, "ranks": list(r.ranks), "until": until}
        return view

    # ------------------------------------------------------------------------------------------
    # Skips and flags

    def skip(self, user_id: int, task_id: int) -> None:
        """Give the task back and never offer it to this user again."""
        check_id("task", task_id)
        with self._conn(write=True) as c:
            if c.scalar(select(Task.id).where(Task.id == task_id)) is None:
                raise NotFound(f"no task {task_id}")
            if not c.scalar(select(exists().where(Skip.task_id == task_id, Skip.user_id == user_id))):
                c.execute(insert(Skip).values(task_id=task_id, user_id=user_id, created_at=time.time()))
            self._release(c, task_id, user_id)
            self._audit(c, user_id, "skip", task_id=task_id)

    def flag(self, user_id: int, task_id: int, kind: str, comment: str = "", admin: bool = False) -> int:
        """Record a flag (unsafe / all_bad / not_rankable) and give the task back, like a skip.

        Only the task's lease holder may flag it (an expired lease counts until someone else takes the
        task), or an admin (whose flag is confirmed at once); each person flags a task at most once.
        """
        if kind not in FLAG_KINDS:
            raise InvalidRanking(f"flag kind must be one of {', '.join(FLAG_KINDS)}, got {str(kind)[:40]!r}")
        check_id("task", task_id)
        with self._conn(write=True) as c:
            holder = c.execute(select(Lease.user_id).where(Lease.task_id == task_id)).first()
            if holder is None:
                raise NotFound(f"no task {task_id}")
            if not admin and holder.user_id != user_id:
                raise Conflict(
                    "not_holder", f"you do not hold task {task_id}; only the annotator it is leased to may flag it"
                )
            if c.scalar(select(exists().where(Flag.task_id == task_id, Flag.user_id == user_id))):
                raise Conflict("already_flagged", f"you already flagged task {task_id}")
            flag_id = c.execute(
                insert(Flag)
                .values(
                    task_id=task_id,
                    user_id=user_id,
                    kind=kind,
                    comment=str(comment)[:2000],
                    created_at=time.time(),
                    status="confirmed" if admin else "open",
                )
                .returning(Flag.id)
            ).scalar_one()
            self._release(c, task_id, user_id)
            self._audit(c, user_id, "flag", task_id=task_id, kind=kind)
            return flag_id

    def review_flag(self, admin_id: int, flag_id: int, status: str) -> None:
        """An admin confirms a flag (the export drops the task) or dismisses it (it no longer counts)."""
        if status not in ("open", "confirmed", "dismissed"):
            raise InvalidRanking(f"flag status must be open, confirmed or dismissed, got {str(status)[:40]!r}")
        check_id("flag", flag_id)
        with self._conn(write=True) as c:
            done = c.execute(update(Flag).where(Flag.id == flag_id).values(status=status))
            if done.rowcount != 1:
                raise NotFound(f"no flag {flag_id}")
            self._audit(c, admin_id, "review_flag", flag_id=flag_id, status=status)
