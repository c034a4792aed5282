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


def test_krippendorff_alpha_ordinal_by_hand():
    from reward.rankings.agreement import krippendorff_alpha_ordinal

    # Two coders, three units: (1, 1), (2, 3), (3, 3). Pairable values: n_1 = 2, n_2 = 1, n_3 = 3; n = 6.
    # Coincidences: o_11 = 2, o_23 = o_32 = 1, o_33 = 2. Ordinal distances d_ck = (sum_{g=c..k} n_g - (n_c+n_k)/2)^2:
    # d_12 = (3 - 1.5)^2 = 2.25, d_13 = (6 - 2.5)^2 = 12.25, d_23 = (4 - 2)^2 = 4.
    # Observed: o_23 d_23 + o_32 d_32 = 8. Expected: sum n_c n_k d_ck over c != k
    #   = 2 * (2*1*2.25 + 2*3*12.25 + 1*3*4) = 2 * (4.5 + 73.5 + 12) = 180.
    # alpha = 1 - (n - 1) * 8 / 180 = 1 - 40 / 180 = 0.7778.
    assert krippendorff_alpha_ordinal([[1, 1], [2, 3], [3, 3]]) == pytest.approx(1 - 40 / 180)
    assert krippendorff_alpha_ordinal([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha_ordinal([[1], [2]]))  # nothing pairable
    assert math.isnan(krippendorff_alpha_ordinal([[2, 2], [2, 2]]))  # no variation


def test_krippendorff_alpha_matches_the_published_example():
    """Krippendorff (2011), 'Computing Krippendorff's Alpha-Reliability': 4 coders, 12 units, missing values;
    ordinal alpha = 0.815."""
    from reward.rankings.agreement import krippendorff_alpha_ordinal

    x = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, x, x, x],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, x, 3],
        [x, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, x],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, x],
    ]
    units = [[c[j] for c in coders if c[j] is not None] for j in range(12)]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(0.815, abs=5e-4)


def test_alpha_on_rankings_with_ties_in_the_summary():
    from reward.rankings.agreement import agreement_summary, krippendorff_alpha_ordinal, ranking_units

    by_task = {1: [("a", [1, 2, 3]), ("b", [1, 2, 3])], 2: [("a", [1, 1, 3]), ("b", [3, 1, 1])], 3: [("a", [1, 2])]}
    units = ranking_units(by_task)
    assert units == [[1, 1], [2, 2], [3, 3], [1, 3], [1, 1], [3, 1]]  # task 3 has one ranking: not pairable
    summary = agreement_summary(by_task)
    assert summary["krippendorff_alpha"] == pytest.approx(krippendorff_alpha_ordinal(units))
    assert 0 < summary["krippendorff_alpha"] < 1
