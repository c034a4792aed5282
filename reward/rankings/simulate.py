"""Simulated annotators with known noise, for tests, benchmarks and the demo's campaign.

Each ranks by a hidden score with Plackett-Luce noise at its temperature (the Gumbel-max sampler of
annotator.py: P(i above j) = sigmoid((s_i - s_j) / T) exactly), or, careless, uniformly at random;
a position bias adds a bonus to the card shown first. `rank_in_store` runs them against the real
store (leases, N, gold tasks at the gold rate, the pause rule) without the HTTP layer; `HttpAnnotator`
is the same annotator through the server's JSON API.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from reward.rankings.annotator import ScriptedAnnotator, plackett_luce_ranks

Score = Callable[[object, str], float]
"""score(prompt, completion text) -> float, higher = better."""


@dataclass
class SimAnnotator:
    name: str
    temperature: float = 1.0
    """Plackett-Luce noise (0: always the score order)."""
    careless: bool = False
    """Rank uniformly at random, whatever the texts."""
    position_bias: float = 0.0
    """Score bonus for the completion shown first (0: none)."""

    def ranks(self, scores: list[float], shown: list[int], seed: str) -> list[int]:
        """Ranks by position (1 = best) for completions with `scores` (by position) shown in order `shown`."""
        rng = random.Random(f"{seed}:{self.name}")
        if self.careless:
            return plackett_luce_ranks([0.0] * len(scores), 1.0, rng)  # Gumbel noise alone: a uniform permutation
        biased = list(scores)
        biased[shown[0]] += self.position_bias
        return plackett_luce_ranks(biased, self.temperature, rng)


def rank_in_store(store, annotators: list[SimAnnotator], score: Score, seed: int = 0, password: str = "sim-pw"):
    """Annotators take turns leasing and ranking through the store until none gets a task; returns
    {name: rankings}. Accounts are created when missing. N is the store's (campaigns: their own)."""
    have = {u["name"] for u in store.list_users()}
    for a in annotators:
        if a.name not in have:
            store.add_user(a.name, "annotator", password)
    ids = {u["name"]: u["id"] for u in store.list_users()}
    n = store.annotators_per_task()
    rng = random.Random(seed)
    done = {a.name: 0 for a in annotators}
    active = list(annotators)
    while active:
        # A new turn order each round, as people's timing would give: with a fixed order the same annotators would
        # always share tasks, and two who only ever meet each other cannot be told apart.
        rng.shuffle(active)
        for a in list(active):
            view = store.next_task(ids[a.name], n, 600.0, rng)
            if view is None:
                active.remove(a)
                continue
            by_position = sorted(view.completions, key=lambda c: c["position"])
            scores = [score(view.prompt, c["text"]) for c in by_position]
            shown = [c["position"] for c in view.completions]
            ranks = a.ranks(scores, shown, f"{seed}:{view.task_id}")
            store.submit(ids[a.name], view.task_id, ranks, f"sim-{a.name}-{view.task_id}", n)
            done[a.name] += 1
    return done


class HttpAnnotator(ScriptedAnnotator):
    """A SimAnnotator through the real server's JSON API (login, leases, idempotent submits)."""

    def __init__(self, base_url: str, sim: SimAnnotator, password: str, score: Score, seed: int = 0):
        super().__init__(base_url=base_url, username=sim.name, password=password, score=score, seed=seed)
        self.sim, self.hidden = sim, score

    def rank(self, task: dict) -> list[int]:
        by_position = sorted(task["completions"], key=lambda c: c["position"])
        scores = [float(self.hidden(task["prompt"], c["text"])) for c in by_position]
        shown = [c["position"] for c in task["completions"]]
        return self.sim.ranks(scores, shown, f"{self.seed}:{task['task_id']}")
