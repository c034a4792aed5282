"""reward/rankings/ratings.py against naive versions: loops over places and pairs, Hunter's MM for the fit."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from reward.rankings import ratings
from reward.rankings.annotator import plackett_luce_ranks


def naive_loglik(theta, items, ranks) -> float:
    """Place by place: the group placed next shares one denominator (Breslow); the last group adds nothing."""
    total = 0.0
    for its, rks in zip(items, ranks):
        placed = [(int(p), int(r)) for p, r in zip(its, rks) if p >= 0]
        last = max(r for _, r in placed)
        for p, r in placed:
            if r == last:
                continue
            rest = [theta[q] for q, s in placed if s >= r]
            total += theta[p] - math.log(sum(math.exp(t) for t in rest))
    return total


def naive_mm(items, ranks, n: int, steps: int = 3000) -> np.ndarray:
    """Hunter (2004)'s MM iterations for the Plackett-Luce MLE (strict rankings), centred like the fit."""
    gamma = np.ones(n)
    wins = np.zeros(n)
    for its, rks in zip(items, ranks):
        order = [int(its[k]) for k in np.argsort(rks) if its[k] >= 0]
        for p in order[:-1]:
            wins[p] += 1
    for _ in range(steps):
        den = np.zeros(n)
        for its, rks in zip(items, ranks):
            order = [int(its[k]) for k in np.argsort(rks) if its[k] >= 0]
            for place in range(len(order) - 1):
                rest = order[place:]
                total = sum(gamma[q] for q in rest)
                for q in rest:
                    den[q] += 1 / total
        gamma = wins / den
        gamma /= np.exp(np.log(gamma).mean())
    theta = np.log(gamma)
    return theta - theta.mean()


def sample_rankings(theta, r: int, k: int, seed: int, ties: bool = False):
    """r rankings of k of the policies (drawn without replacement), by Plackett-Luce at strengths theta."""
    rng = random.Random(seed)
    P = len(theta)
    items = -np.ones((r, P), dtype=int)
    ranks = np.zeros((r, P), dtype=int)
    for i in range(r):
        chosen = rng.sample(range(P), k)
        rk = plackett_luce_ranks([theta[p] for p in chosen], 1.0, rng)
        if ties and rng.random() < 0.3:  # tie the two worst now and then
            worst = sorted(range(k), key=lambda j: rk[j])[-2:]
            rk = [rk[j] if j not in worst else min(rk[w] for w in worst) for j in range(k)]
        items[i, :k], ranks[i, :k] = chosen, rk
    return items, ranks


def test_loglik_matches_the_place_by_place_loop_with_ties_and_padding():
    theta = np.array([0.3, -1.0, 0.8, 0.0])
    items, ranks = sample_rankings(theta, 40, 3, seed=1, ties=True)
    assert ratings.pl_loglik(theta, items, ranks) == pytest.approx(naive_loglik(theta, items, ranks), rel=1e-12)
    w = np.random.default_rng(0).random(40)
    weighted = sum(wi * naive_loglik(theta, items[i : i + 1], ranks[i : i + 1]) for i, wi in enumerate(w))
    assert ratings.pl_loglik(theta, items, ranks, w) == pytest.approx(weighted, rel=1e-12)


def test_fit_matches_hunters_mm_and_recovers_the_strengths():
    truth = np.array([1.0, 0.0, -0.5, 0.4])
    items, ranks = sample_rankings(truth, 200, 3, seed=2)
    fit = ratings.fit_plackett_luce(items, ranks, 4, prior_sd=1e4)
    assert fit == pytest.approx(naive_mm(items, ranks, 4, steps=200), abs=1e-3)
    assert np.abs(fit - (truth - truth.mean())).max() < 0.35
    # the MAP is the mode: any nudge lowers the log-posterior
    post = lambda t: ratings.pl_loglik(t, items, ranks) - (t**2).sum() / (2 * ratings.PRIOR_SD**2)  # noqa: E731
    best = ratings.fit_plackett_luce(items, ranks, 4)
    for d in np.eye(4) * 1e-3:
        assert post(best) >= post(best + d) and post(best) >= post(best - d)


def test_batched_weights_equal_separate_fits_and_counts_equal_repeats():
    items, ranks = sample_rankings(np.array([0.5, 0.0, -0.5]), 30, 3, seed=3)
    w = ratings.cluster_weights(np.arange(30) // 2, samples=3, seed=0)
    batch = ratings.fit_plackett_luce(items, ranks, 3, w)
    for b in range(3):
        assert batch[b] == pytest.approx(ratings.fit_plackett_luce(items, ranks, 3, w[b]), abs=1e-9)
        repeat = np.repeat(np.arange(30), w[b].astype(int))
        assert batch[b] == pytest.approx(ratings.fit_plackett_luce(items[repeat], ranks[repeat], 3), abs=1e-9)


def test_win_rates_and_position_shares_match_counting_by_hand():
    items, ranks = sample_rankings(np.array([0.2, 0.0, -0.4]), 25, 3, seed=4, ties=True)
    shown = np.array([np.random.default_rng(i).permutation(3) for i in range(25)])
    wins, met, tied = ratings.pair_outcomes(items, ranks, 3)
    for p, q in itertools.permutations(range(3), 2):
        w = m = t = 0.0
        for its, rks in zip(items, ranks):
            rp, rq = rks[list(its).index(p)], rks[list(its).index(q)]
            m, w, t = m + 1, w + (rp < rq) + 0.5 * (rp == rq), t + (rp == rq)
        assert (wins[:, p, q].sum(), met[:, p, q].sum(), tied[:, p, q].sum()) == (w, m, t)
    share, present = ratings.position_shares(items, ranks, shown)
    for r in range(25):
        for k in range(3):
            others = [j for j in range(3) if j != k]
            beat = sum((ranks[r, k] < ranks[r, j]) + 0.5 * (ranks[r, k] == ranks[r, j]) for j in others) / 2
            assert share[r, shown[r, k]] == beat and present[r, shown[r, k]] == 1


def test_campaign_statistics_intervals_and_a_position_bias_shows():
    P, R = 3, 120
    rng = random.Random(5)
    items = np.tile(np.arange(P), (R, 1))
    shown = np.array([rng.sample(range(P), P) for _ in range(R)])
    # an annotator who favours whatever is shown first, on policies of equal quality
    ranks = np.array([plackett_luce_ranks([1.5 * (s == 0) for s in shown[r]], 1.0, rng) for r in range(R)])
    out = ratings.campaign_statistics(items, ranks, shown, np.arange(R), ["a", "b", "c"], samples=300)
    first = out["position"][0]
    assert first["slot"] == 1 and first["low"] > 0.5  # the check catches it
    for r in out["ratings"].values():
        assert r["low"] <= r["rating"] <= r["high"] and abs(r["rating"]) < 0.5  # equal policies
    ab = out["win_rates"]["a"]["b"]
    assert ab["low"] <= ab["rate"] <= ab["high"] and ab["n"] == R
    assert out["win_rates"]["b"]["a"]["rate"] == pytest.approx(1 - ab["rate"])
