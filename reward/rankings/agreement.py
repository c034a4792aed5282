"""Inter-annotator agreement on rankings: pure functions, no database.

A ranking is a list of ranks aligned to the task's completions (1 = best, ties share a value).
For every pair of completions (i, j) an annotator says i better, j better, or tie.
"""

from __future__ import annotations

import itertools
import math


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def pairwise_agreement(a: list[int], b: list[int]) -> float:
    """Share of completion pairs on which two rankings give the same verdict (better / worse / tie)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    if not pairs:
        return math.nan
    same = sum(_sign(a[i] - a[j]) == _sign(b[i] - b[j]) for i, j in pairs)
    return same / len(pairs)


def kendall_tau(a: list[int], b: list[int]) -> float:
    """Kendall's tau-b between two rankings (handles ties); nan when either ranking is all ties."""
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        sa, sb = _sign(a[i] - a[j]), _sign(b[i] - b[j])
        if sa == 0 and sb == 0:
            continue
        if sa == 0:
            ties_a += 1
        elif sb == 0:
            ties_b += 1
        elif sa == sb:
            concordant += 1
        else:
            discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else math.nan


def consensus_ranks(rankings: list[list[int]]) -> list[int]:
    """Competition ranks of the mean rank across annotators (equal means tie); Borda order for full rankings."""
    k = len(rankings[0])
    mean = [sum(r[i] for r in rankings) / len(rankings) for i in range(k)]
    # Round so float noise does not split what are exact ties in rational arithmetic.
    mean = [round(m, 9) for m in mean]
    return [1 + sum(other < m for other in mean) for m in mean]


def agreement_summary(by_task: dict[int, list[tuple[str, list[int]]]]) -> dict:
    """Mean pairwise agreement and Kendall tau over every pair of annotators on every shared task.

    `by_task` maps task id -> [(annotator, ranks), ...]. Also returns each annotator's mean
    agreement with the others, the usual way to spot someone ranking carelessly.
    """
    agreements, taus = [], []
    per_annotator: dict[str, list[float]] = {}
    for rankings in by_task.values():
        for (na, ra), (nb, rb) in itertools.combinations(rankings, 2):
            agr = pairwise_agreement(ra, rb)
            tau = kendall_tau(ra, rb)
            agreements.append(agr)
            if not math.isnan(tau):
                taus.append(tau)
            per_annotator.setdefault(na, []).append(agr)
            per_annotator.setdefault(nb, []).append(agr)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "tasks_with_overlap": sum(len(r) >= 2 for r in by_task.values()),
        "annotator_pairs": len(agreements),
        "pairwise_agreement": mean(agreements),
        "kendall_tau": mean(taus),
        "per_annotator": {name: mean(v) for name, v in sorted(per_annotator.items())},
    }
