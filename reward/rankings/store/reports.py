"""Store methods that only read: annotator progress, the admin overview, flags, and rankings for the export."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import func, select

from reward.rankings.store.models import (
    AuditLog,
    Campaign,
    Completion,
    Flag,
    Lease,
    Prompt,
    Ranking,
    Skip,
    Task,
    User,
)
from reward.rankings.store.sql import Raw

PAUSE_SECONDS = 600.0
"""A gap between two rankings longer than this is a break: it does not count as working time."""
MIN_WINDOW_SECONDS = 900.0
"""Rankings per hour are counted over at least this much working time, so a burst is not extrapolated to an hour."""


def rankings_per_hour(times: list[float], seconds: list[float]) -> float | None:
    """Rankings per hour of working time: from each ranking's submit time (`times`) and its own seconds on the page.

    Working time is the first ranking's own seconds plus every gap between consecutive submits, a gap longer than
    PAUSE_SECONDS counting as that ranking's own seconds (a break in between); it is floored at MIN_WINDOW_SECONDS.
    3,600 / median seconds (what this was) turned 428 scripted rankings in 3 s into 577,573 per hour; here they are
    1,712 (428 in the 15-minute floor), and a person ranking one a minute for an hour gets 60.
    """
    if not times:
        return None
    order = sorted(range(len(times)), key=times.__getitem__)
    worked = min(seconds[order[0]], PAUSE_SECONDS)
    for prev, cur in zip(order, order[1:]):
        gap = times[cur] - times[prev]
        worked += gap if gap <= PAUSE_SECONDS else min(seconds[cur], PAUSE_SECONDS)
    return len(times) * 3600.0 / max(worked, MIN_WINDOW_SECONDS)


class Reports:
    """Mixed into Store (which provides `_tx`, `_conn` and `_audit`)."""

    def progress(self, user_id: int, n_per_task: int) -> dict:
        """The annotator's own counts: ranked, skipped, and tasks still open to them."""
        with self._conn() as c:
            return self._progress(c, user_id, n_per_task)

    def _progress(self, s, user_id: int, n_per_task: int, approximate: bool = False) -> dict:
        """progress() inside the caller's transaction (a Core connection).

        Open tasks minus the open tasks this user already ranked, skipped or flagged. approximate: the
        count of open tasks may be up to a second old (it walks every open task, and a busy server would
        count them on every request); used only when a task was just handed out, so `available` stays
        above 0 then, and exact whenever nothing is left to hand out.
        """
        raw = Raw(s)
        ranked, skipped, done_by_me = raw.one("my_counts", user=user_id, n=n_per_task)
        cached = getattr(self, "_open_count", None)
        now = time.monotonic()
        if approximate and cached and cached[0] == n_per_task and now - cached[1] < 1.0:
            open_tasks = cached[2]
        else:
            open_tasks = raw.one("open_tasks", n=n_per_task)[0]
            self._open_count = (n_per_task, now, open_tasks)
        available = max(open_tasks - done_by_me, 1 if approximate else 0)
        if not approximate and self.gold_policy().pause_below and self._paused(s, user_id, self.gold_policy()):
            # Paused for low gold accuracy: nothing more for them (and a scripted annotator stops waiting).
            return {"ranked": ranked, "skipped": skipped, "available": 0, "paused": True}
        return {"ranked": ranked, "skipped": skipped, "available": available}

    def overview(self, n_per_task: int) -> dict:
        """Task progress for the admin page and `rlhf rank status` (gold tasks apart: they never complete)."""
        now = time.time()
        target = func.coalesce(Task.annotators, n_per_task)  # a campaign's own N, else the store's
        with self._tx() as s:
            queued = select(func.count(Task.id)).where(Task.is_gold.is_(False))
            tasks = s.scalar(queued) or 0
            complete = s.scalar(queued.where(Task.n_done >= target)) or 0
            started = s.scalar(queued.where(Task.n_done > 0, Task.n_done < target)) or 0
            needed = s.scalar(select(func.sum(target)).where(Task.is_gold.is_(False))) or 0
            leased = s.scalar(select(func.count()).select_from(Lease).where(Lease.expires_at > now)) or 0
            rankings = s.scalar(select(func.count(Ranking.id))) or 0
            flags = s.scalar(select(func.count(Flag.id))) or 0
            gold = s.scalar(select(func.count(Task.id)).where(Task.is_gold.is_(True))) or 0
            return {
                "tasks": tasks,
                "complete": complete,
                "in_progress": started,
                "leased_now": leased,
                "rankings": rankings,
                "rankings_needed": int(needed),
                "flags": flags,
                "gold_tasks": gold,
            }

    def annotator_rows(self) -> list[dict]:
        """Per-annotator counts and speed (median seconds per ranking)."""
        with self._tx() as s:
            by_user: dict[int, list[float]] = {}
            submitted: dict[int, list[float]] = {}
            for uid, sec, at in s.execute(select(Ranking.annotator_id, Ranking.seconds, Ranking.created_at)):
                by_user.setdefault(uid, []).append(sec)
                submitted.setdefault(uid, []).append(at)
            skips = dict(s.execute(select(Skip.user_id, func.count()).group_by(Skip.user_id)).all())
            flags = dict(s.execute(select(Flag.user_id, func.count()).group_by(Flag.user_id)).all())
            rows = []
            for u in s.scalars(select(User).order_by(User.name)):
                own = by_user.get(u.id, [])
                secs = sorted(own)
                median = secs[len(secs) // 2] if secs else None
                rows.append(
                    {
                        "name": u.name,
                        "role": u.role,
                        "rankings": len(secs),
                        "skips": skips.get(u.id, 0),
                        "flags": flags.get(u.id, 0),
                        "median_seconds": median,
                        "per_hour": rankings_per_hour(submitted.get(u.id, []), own),
                    }
                )
            return rows

    def flags(self) -> list[dict]:
        with self._tx() as s:
            rows = s.execute(
                select(Flag, User.name, User.role, Prompt.text, Prompt.is_chat)
                .join(User, User.id == Flag.user_id)
                .join(Task, Task.id == Flag.task_id)
                .join(Prompt, Prompt.id == Task.prompt_id)
                .order_by(Flag.id.desc())
            ).all()
            return [
                {
                    "id": f.id,
                    "task_id": f.task_id,
                    "user": name,
                    "role": role,
                    "kind": f.kind,
                    "comment": f.comment,
                    "status": f.status,
                    "prompt": json.loads(text) if is_chat else text,
                    "at": f.created_at,
                }
                for f, name, role, text, is_chat in rows
            ]

    def rankings(self) -> list[dict]:
        """Every committed ranking with its task's prompt and completions, oldest first (the export's input)."""
        with self._tx() as s:
            comps: dict[int, list[Completion]] = {}
            for c in s.scalars(select(Completion).order_by(Completion.task_id, Completion.position)):
                comps.setdefault(c.task_id, []).append(c)
            # Dismissed flags do not count; `flag_confirmed` marks tasks an admin flagged or confirmed.
            flagged: dict[int, list[str]] = {}
            confirmed: set[int] = set()
            for task_id, kind, status in s.execute(select(Flag.task_id, Flag.kind, Flag.status)):
                if status != "dismissed":
                    flagged.setdefault(task_id, []).append(kind)
                if status == "confirmed":
                    confirmed.add(task_id)
            campaigns = dict(s.execute(select(Campaign.id, Campaign.name)).all())
            rows = s.execute(
                select(Ranking, User.name, Task, Prompt)
                .join(User, User.id == Ranking.annotator_id)
                .join(Task, Task.id == Ranking.task_id)
                .join(Prompt, Prompt.id == Task.prompt_id)
                .order_by(Ranking.id)
            ).all()
            out = []
            for r, name, task, prompt in rows:
                cs = comps[task.id]
                out.append(
                    {
                        "ranking_id": r.id,
                        "task_id": task.id,
                        "prompt_id": prompt.id,
                        "prompt": json.loads(prompt.text) if prompt.is_chat else prompt.text,
                        "is_chat": prompt.is_chat,
                        "completions": [c.text for c in cs],
                        "models": [c.model for c in cs],
                        "seeds": [c.seed for c in cs],
                        "ranks": list(r.ranks),
                        "order_shown": list(r.order_shown),
                        "annotator": name,
                        "seconds": r.seconds,
                        "created_at": r.created_at,
                        "task_meta": task.meta or {},
                        "flags": flagged.get(task.id, []),
                        "flag_confirmed": task.id in confirmed,
                        # The export leaves these out of training data: gold always, campaigns unless asked.
                        "campaign": campaigns.get(task.campaign_id),
                        "gold": bool(task.is_gold),
                    }
                )
            return out

    def audit_log(self, limit: int = 100) -> list[dict]:
        with self._tx() as s:
            return [
                {"at": a.at, "user_id": a.user_id, "action": a.action, "detail": a.detail}
                for a in s.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(limit))
            ]

    def log(self, user_id: int | None, action: str, **detail: Any) -> None:
        with self._tx(write=True) as s:
            self._audit(s, user_id, action, **detail)
