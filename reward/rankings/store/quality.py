"""Store methods for judging policies and people: evaluation campaigns and gold tasks.

A campaign's tasks are ordinary tasks with a `campaign_id` (and the campaign's own N): they are ranked
through the same queue and pages, blind (the policy names stay in the task's meta, which no annotator
route returns), and the export leaves them out of training data unless asked. A gold task carries its
known answer in `gold_answers`, never on the task: it is served at the gold rate to every annotator
once (no N), looks like any other task in every page and route, and is never exported.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from alignment.common.errors import UserError
from reward.rankings.agreement import gold_agreement
from reward.rankings.store.errors import InvalidRanking
from reward.rankings.store.models import Campaign, Completion, GoldAnswer, Prompt, Ranking, Task, User
from reward.rankings.store.sql import Raw, load
from reward.rankings.store.work import normalize_ranks

CAMPAIGN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
POLICY_TTL_S = 2.0
"""How long a process trusts its copy of the gold settings (every server process reads them from the store)."""


@dataclass
class GoldPolicy:
    """How gold tasks are served and what they do (settings in the store, so every process agrees)."""

    rate: float = 0.0
    """Chance that a lease hands out a gold task (while other work is left for that annotator)."""
    pause_below: float = 0.0
    """Gold accuracy under which an annotator gets no more tasks (0: never pause)."""
    min_answers: int = 5
    """Gold tasks an annotator must have answered before the pause rule applies."""
    resumed: dict = field(default_factory=dict)
    """user id (str) -> time an admin resumed them: only gold answers after it count."""


def gold_accuracy(answers: list[tuple[list[int], list[int]]]) -> tuple[float | None, int]:
    """(accuracy over every strictly ordered gold pair, answers) for one annotator's (ranks, gold ranks) list."""
    credit = pairs = 0.0
    for ranks, gold in answers:
        c, p = gold_agreement(ranks, gold)
        credit, pairs = credit + c, pairs + p
    return (credit / pairs if pairs else None), len(answers)


def check_campaign_name(name) -> str:
    if not isinstance(name, str) or not CAMPAIGN_NAME.match(name):
        raise UserError(f"campaign name must be 1-64 letters, digits, '_', '.' or '-', got {str(name)[:70]!r}")
    return name


def gold_task(task: dict, where: str, by: int | None = None) -> dict:
    """A task for `Store.add_tasks` that is gold: its `ranks` checked (1 = best, ties share, one strict pair at
    least) and kept as the known answer; UserError starting with `where` otherwise."""
    k = len(task.get("completions") or [])
    try:
        ranks = normalize_ranks(task.get("ranks"), k, allow_ties=True)
    except InvalidRanking as e:
        raise UserError(f"{where}{e}") from None
    if len(set(ranks)) < 2:
        raise UserError(f"{where}the known answer ties every completion: nothing to check people against")
    return {**task, "gold": ranks, "by": by, "meta": dict(task.get("meta") or {})}


class Quality:
    """Mixed into Store (which provides `_tx`, `_conn`, `_audit`, `add_tasks`, settings)."""

    # ------------------------------------------------------------------------------------------
    # Gold: the policy, the pause, the answers

    def gold_policy(self) -> GoldPolicy:
        cached = getattr(self, "_gold_policy", None)
        if cached and time.monotonic() - cached[0] < POLICY_TTL_S:
            return cached[1]
        stored = self.get_setting("gold", {}) or {}
        policy = GoldPolicy(**{k: v for k, v in stored.items() if k in GoldPolicy.__dataclass_fields__})
        self._gold_policy = (time.monotonic(), policy)
        return policy

    def set_gold_policy(self, rate: float | None = None, pause_below: float | None = None, min_answers=None) -> None:
        """Change what is given (None keeps the stored value)."""
        current = self.get_setting("gold", {}) or {}
        for key, value, low, high in (("rate", rate, 0, 1), ("pause_below", pause_below, 0, 1)):
            if value is not None and not low <= value <= high:
                raise UserError(f"gold {key} must be in [{low}, {high}], got {value}")
        if min_answers is not None and (not isinstance(min_answers, int) or min_answers < 1):
            raise UserError(f"gold min_answers must be an integer >= 1, got {min_answers!r}")
        changes = {"rate": rate, "pause_below": pause_below, "min_answers": min_answers}
        self.set_setting("gold", {**current, **{k: v for k, v in changes.items() if v is not None}})
        self._gold_policy = None

    def _paused(self, c: Connection, user_id: int, policy: GoldPolicy) -> bool:
        """Whether the user's gold accuracy (answers since an admin last resumed them) is under the pause line."""
        since = float(policy.resumed.get(str(user_id), 0.0))
        rows = Raw(c).all("gold_answers_of", user=user_id, since=since)
        if len(rows) < policy.min_answers:
            return False
        accuracy, _ = gold_accuracy([(list(load(r)), list(load(g))) for r, g in rows])
        return accuracy is not None and accuracy < policy.pause_below

    def resume_annotator(self, name: str, by: int | None = None) -> None:
        """Lift a gold pause: only gold answers from now on count for this person."""
        with self._tx() as s:
            user_id = s.scalar(select(User.id).where(User.name == name))
        if user_id is None:
            raise UserError(f"no user '{name}'")
        current = self.get_setting("gold", {}) or {}
        resumed = {**current.get("resumed", {}), str(user_id): time.time()}
        self.set_setting("gold", {**current, "resumed": resumed})
        self._gold_policy = None
        self.log(by, "gold_resume", name=name)

    def gold_report(self) -> dict[str, dict]:
        """Per annotator (by name): gold answers, accuracy (all answers) and whether the pause applies now."""
        policy = self.gold_policy()
        with self._tx() as s:
            rows = s.execute(
                select(User.id, User.name, Ranking.ranks, GoldAnswer.ranks, Ranking.created_at)
                .join(Ranking, Ranking.task_id == GoldAnswer.task_id)
                .join(User, User.id == Ranking.annotator_id)
            ).all()
        by_user: dict[tuple, list] = {}
        for uid, name, ranks, gold, at in rows:
            by_user.setdefault((uid, name), []).append((list(ranks), list(gold), at))
        out = {}
        for (uid, name), answers in sorted(by_user.items(), key=lambda x: x[0][1]):
            accuracy, n = gold_accuracy([(r, g) for r, g, _ in answers])
            since = float(policy.resumed.get(str(uid), 0.0))
            recent, m = gold_accuracy([(r, g) for r, g, at in answers if at > since])
            paused = bool(policy.pause_below) and m >= policy.min_answers and recent is not None
            out[name] = {"answers": n, "accuracy": accuracy, "paused": paused and recent < policy.pause_below}
        return out

    def add_gold_tasks(self, tasks: list[dict], by: int | None = None) -> list[int]:
        """Gold tasks ({"prompt", "completions": [{"text"}...], "ranks": known answer, "meta"?}), one transaction.

        The answer is checked (1 = best, ties share, at least one strict pair) and kept in `gold_answers`."""
        prepared = [
            gold_task(t, f"gold task {i + 1}: " if len(tasks) > 1 else "gold task: ", by) for i, t in enumerate(tasks)
        ]
        ids = self.add_tasks(prepared)
        self.log(by, "gold_add", tasks=len(ids))
        return ids

    def gold_answers(self) -> dict[int, list[int]]:
        with self._tx() as s:
            return {t: list(r) for t, r in s.execute(select(GoldAnswer.task_id, GoldAnswer.ranks))}

    # ------------------------------------------------------------------------------------------
    # Campaigns

    def create_campaign(self, name: str, tasks: list[dict], annotators_per_task: int, meta: dict) -> dict:
        """Add a campaign's tasks ({"prompt", "completions": [{"text"}...], "meta": {"policies": [...]}}) with
        their own N; again with the same name adds only what is new. Returns {"name", "id", "tasks", "new"}."""
        check_campaign_name(name)
        if not isinstance(annotators_per_task, int) or not 1 <= annotators_per_task <= 1000:
            raise UserError(f"annotators_per_task must be an integer in [1, 1000], got {annotators_per_task!r}")
        with self._tx(write=True) as s:
            found = s.scalar(select(Campaign).where(Campaign.name == name))
            if found is None:
                meta = {**meta, "annotators_per_task": annotators_per_task}
                found = Campaign(name=name, meta=meta, created_at=time.time())
                s.add(found)
                s.flush()
                self._audit(s, None, "campaign_create", name=name, tasks=len(tasks))
            elif found.meta.get("annotators_per_task") != annotators_per_task:
                n = found.meta.get("annotators_per_task")
                raise UserError(f"campaign '{name}' exists with annotators_per_task={n}; use that or a new name")
            campaign_id = found.id
        before = self._campaign_task_count(campaign_id)
        for t in tasks:
            t["meta"] = {**(t.get("meta") or {}), "campaign": name}
        ids = self.add_tasks([{**t, "campaign_id": campaign_id, "annotators": annotators_per_task} for t in tasks])
        self._max_n = None  # this process serves the new N at once (others within MAX_N_TTL_S)
        return {
            "name": name,
            "id": campaign_id,
            "tasks": len(ids),
            "new": self._campaign_task_count(campaign_id) - before,
        }

    def _campaign_task_count(self, campaign_id: int) -> int:
        with self._tx() as s:
            return s.scalar(select(func.count(Task.id)).where(Task.campaign_id == campaign_id)) or 0

    def campaigns(self) -> list[dict]:
        """Every campaign: name, meta (policies, source), tasks, complete tasks, rankings."""
        with self._tx() as s:
            out = []
            for c in s.scalars(select(Campaign).order_by(Campaign.id)):
                tasks = select(func.count(Task.id)).where(Task.campaign_id == c.id)
                n_tasks = s.scalar(tasks) or 0
                complete = s.scalar(tasks.where(Task.n_done >= Task.annotators)) or 0
                rankings = s.scalar(select(func.sum(Task.n_done)).where(Task.campaign_id == c.id)) or 0
                out.append(
                    {
                        "name": c.name,
                        "meta": dict(c.meta),
                        "created_at": c.created_at,
                        "tasks": n_tasks,
                        "complete": complete,
                        "rankings": int(rankings),
                    }
                )
            return out

    def campaign_rankings(self, name: str) -> tuple[dict, list[dict]]:
        """(the campaign, every ranking of its tasks): prompt, texts, the policies by position (task meta),
        ranks, order shown, annotator. UserError for an unknown name."""
        with self._tx() as s:
            campaign = s.scalar(select(Campaign).where(Campaign.name == name))
            if campaign is None:
                known = ", ".join(s.scalars(select(Campaign.name))) or "none yet"
                raise UserError(f"no campaign '{name}' in the store (campaigns: {known})")
            texts: dict[int, list[str]] = {}
            for task_id, text in s.execute(
                select(Completion.task_id, Completion.text)
                .join(Task, Task.id == Completion.task_id)
                .where(Task.campaign_id == campaign.id)
                .order_by(Completion.task_id, Completion.position)
            ):
                texts.setdefault(task_id, []).append(text)
            rows = s.execute(
                select(Ranking, User.name, Task.meta, Task.prompt_id, Prompt.text, Prompt.is_chat)
                .join(User, User.id == Ranking.annotator_id)
                .join(Task, Task.id == Ranking.task_id)
                .join(Prompt, Prompt.id == Task.prompt_id)
                .where(Task.campaign_id == campaign.id)
                .order_by(Ranking.id)
            ).all()
            info = {"name": campaign.name, "meta": dict(campaign.meta), "tasks": len(texts)}
            return info, [
                {
                    "ranking_id": r.id,
                    "task_id": r.task_id,
                    "prompt_id": prompt_id,
                    "prompt": json.loads(text) if is_chat else text,
                    "texts": texts[r.task_id],
                    "policies": list((meta or {}).get("policies") or []),
                    "ranks": list(r.ranks),
                    "order_shown": list(r.order_shown),
                    "annotator": annotator,
                    "seconds": r.seconds,
                }
                for r, annotator, meta, prompt_id, text, is_chat in rows
            ]
