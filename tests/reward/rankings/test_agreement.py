"""Agreement metrics against hand computations."""

from __future__ import annotations

import math

import pytest

from reward.rankings.agreement import agreement_summary, consensus_ranks, kendall_tau, pairwise_agreement


def test_identical_and_reversed_rankings():
    assert pairwise_agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert pairwise_agreement([1, 2, 3], [3, 2, 1]) == 0.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_one_swap_by_hand():
    # Pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); b swaps items 2 and 3: 5 concordant, 1 discordant.
    a, b = [1, 2, 3, 4], [1, 2, 4, 3]
    assert pairwise_agreement(a, b) == pytest.approx(5 / 6)
    assert kendall_tau(a, b) == pytest.approx((5 - 1) / 6)


def test_ties_by_hand():
    # a = [1, 1, 3]: pairs (0,1) tie, (0,2) <, (1,2) <.  b = [1, 2, 3]: all <.
    # Agreement: (0,1) differs (tie vs <), the others agree -> 2/3.
    # tau-b: concordant 2, discordant 0, tied only in a: 1 -> 2 / sqrt((2+0+1) * (2+0+0)) = 2 / sqrt(6).
    a, b = [1, 1, 3], [1, 2, 3]
    assert pairwise_agreement(a, b) == pytest.approx(2 / 3)
    assert kendall_tau(a, b) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1, 1], [1, 2]))


def test_consensus_is_mean_rank_with_ties():
    # Means: item0 (1+2+1)/3=1.33, item1 (2+1+3)/3=2, item2 (3+3+2)/3=2.67.
    assert consensus_ranks([[1, 2, 3], [2, 1, 3], [1, 3, 2]]) == [1, 2, 3]
    assert consensus_ranks([[1, 2], [2, 1]]) == [1, 1]


def test_summary_over_tasks():
    by_task = {
        1: [("a", [1, 2, 3]), ("b", [1, 2, 3]), ("c", [3, 2, 1])],
        2: [("a", [1, 2]), ("b", [2, 1])],
        3: [("a", [1, 2])],
    }
    s = agreement_summary(by_task)
    # Pairs: t1 a-b 1.0, a-c 0.0, b-c 0.0; t2 a-b 0.0 -> mean 0.25; taus 1, -1, -1, -1 -> -0.5.
    assert s["annotator_pairs"] == 4 and s["tasks_with_overlap"] == 2
    assert s["pairwise_agreement"] == pytest.approx(0.25)
    assert s["kendall_tau"] == pytest.approx(-0.5)
    assert s["per_annotator"]["c"] == 0.0 and s["per_annotator"]["a"] == pytest.approx(1 / 3)
