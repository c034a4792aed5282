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


def krippendorff_alpha_ordinal(units: list[list[float]]) -> float:
    """Krippendorff's alpha with the ordinal metric (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").

    `units`: for each unit, the values the coders gave it (missing values simply left out; any number of
    coders). Units with fewer than two values are not pairable and are ignored. Ordinal: the distance
    between values c < k is (sum of n_g for c <= g <= k  -  (n_c + n_k) / 2)^2 over the marginal value
    frequencies n_g, so only the order of values matters, not their spacing. Ties are equal values.
    alpha = 1 - (n - 1) * sum_ck o_ck d_ck / sum_ck n_c n_k d_ck; 1 is perfect agreement, 0 chance;
    nan when there is nothing to compare or no variation at all.
    """
    pairable = [[v for v in u] for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    if not values:
        return math.nan
    index = {v: i for i, v in enumerate(values)}
    size = len(values)
    # Coincidence matrix: each ordered pair of values within a unit, weighted 1 / (m_u - 1).
    o = [[0.0] * size for _ in range(size)]
    for u in pairable:
        w = 1.0 / (len(u) - 1)
        for a, b in itertools.permutations(range(len(u)), 2):
            o[index[u[a]]][index[u[b]]] += w
    n_c = [sum(row) for row in o]
    n = sum(n_c)
    cumulative = list(itertools.accumulate(n_c))

    def delta(c: int, k: int) -> float:
        lo, hi = min(c, k), max(c, k)
        between = cumulative[hi] - (cumulative[lo - 1] if lo > 0 else 0.0)
        return (between - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(o[c][k] * delta(c, k) for c in range(size) for k in range(size))
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in range(size) for k in range(size))
    if expected == 0:
        return math.nan
    return 1.0 - (n - 1) * observed / expected


def ranking_units(by_task: dict[int, list[tuple[str, list[int]]]]) -> list[list[int]]:
    """Alpha's units for rankings: each completion of each task, valued by the rank each annotator gave it."""
    units = []
    for rankings in by_task.values():
        if len(rankings) < 2:
            continue
        k = len(rankings[0][1])
        units += [[ranks[i] for _, ranks in rankings if len(ranks) == k] for i in range(k)]
    return units


def agreement_summary(by_task: dict[int, list[tuple[str, list[int]]]]) -> dict:
    """Mean pairwise agreement and Kendall tau over every pair of annotators on every shared task,
    and Krippendorff's ordinal alpha over every ranked completion (chance-corrected).

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
        "krippendorff_alpha": krippendorff_alpha_ordinal(ranking_units(by_task)) if agreements else None,
        "per_annotator": {name: mean(v) for name, v in sorted(per_annotator.items())},
    }


def gold_agreement(ranks: list[int], gold: list[int]) -> tuple[float, int]:
    """(credit, pairs) of one answer to a gold task: over the pairs the gold answer orders strictly, 1 for the
    same order, 1/2 for a tie, 0 for the reverse. Gold ties say nothing and are left out. Accuracy = credit / pairs;
    a ranker at random scores 1/2 in expectation."""
    credit, pairs = 0.0, 0
    for i, j in itertools.combinations(range(len(gold)), 2):
        want = _sign(gold[j] - gold[i])
        if want == 0:
            continue
        got = _sign(ranks[j] - ranks[i])
        credit += 1.0 if got == want else 0.5 if got == 0 else 0.0
        pairs += 1
    return credit, pairs
