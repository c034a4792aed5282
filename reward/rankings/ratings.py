"""Ratings of policies from blind K-wise rankings: Plackett-Luce strengths, pairwise win rates, position bias,
each with a bootstrap 95% interval. Pure numpy; no store, no model.

Layout of R rankings over at most K completions each (numpy arrays):
- items [R, K] int: the policy (0..P-1) of each completion, -1 where a ranking has fewer than K;
- ranks [R, K] int: 1 = best, ties share (1, 1, 3), aligned to items;
- shown [R, K] int: the display slot (0 = shown first) of each completion, -1 for padding;
- cluster [R] int: the resampling unit of each ranking (its prompt, or its task).

The Plackett-Luce model gives policy p a strength theta_p: a ranking's probability is the product over its
places of exp(theta of the one placed there) / sum of exp(theta) over those not yet placed (for K = 2 this is
Bradley-Terry, and with K = 2 and theta on a log10 scale x 400 it is Chatbot Arena's Elo). Ties use Breslow's
rule (a tied group shares one denominator); the last place carries no information and adds nothing. The fit is
the MAP under a N(0, PRIOR_SD^2) prior per theta, which keeps a policy that always wins finite and fixes the
sum of theta at 0 (the likelihood only sees differences).

Intervals resample clusters with replacement (a cluster bootstrap: rankings of one prompt move together, since
they share its difficulty) and take the 2.5 and 97.5 percentiles of each statistic over the resamples.
"""

from __future__ import annotations

import warnings

import numpy as np

PRIOR_SD = 4.0
"""Prior standard deviation of each strength (logits): weak next to any observed difference of interest."""
NEWTON_STEPS = 25


# ----------------------------------------------------------------------------------------------
# Plackett-Luce


def _risk_sets(items: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(risk [R, K, K]: j is still unplaced when i's group is placed, counted [R, K]: i's place adds a term)."""
    valid = items >= 0
    risk = valid[:, None, :] & valid[:, :, None] & (ranks[:, None, :] >= ranks[:, :, None])
    last = np.where(valid, ranks, -1).max(axis=1, keepdims=True)
    return risk, valid & (ranks < last)


def pl_loglik(theta: np.ndarray, items: np.ndarray, ranks: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted Plackett-Luce (Breslow ties) log-likelihood of the rankings at strengths theta [P]."""
    risk, counted = _risk_sets(items, ranks)
    s = np.where(items >= 0, theta[np.maximum(items, 0)], 0.0)
    masked = np.where(risk, s[:, None, :], -np.inf)
    lse = np.logaddexp.reduce(masked, axis=2)
    per = np.where(counted, s - np.where(counted, lse, 0.0), 0.0).sum(axis=1)
    return float(per @ (np.ones(len(per)) if weights is None else weights))


def fit_plackett_luce(
    items: np.ndarray, ranks: np.ndarray, n_policies: int, weights: np.ndarray | None = None, prior_sd=PRIOR_SD
) -> np.ndarray:
    """MAP strengths theta: [P] for one weight vector [R], or [B, P] for many ([B, R]: bootstrap resamples),
    by Newton's method (the log-posterior is concave). Policies no ranking holds stay at 0."""
    w = np.ones((1, len(items))) if weights is None else np.atleast_2d(weights).astype(float)
    risk, counted = _risk_sets(items, ranks)
    onehot = np.zeros((*items.shape, n_policies))
    r, k = np.nonzero(items >= 0)
    onehot[r, k, items[r, k]] = 1.0
    wc = w[:, :, None] * counted[None]  # [B, R, K]: the weight of each counted place
    theta = np.zeros((len(w), n_policies))
    eye = np.eye(n_policies) / prior_sd**2
    B, (R, K) = len(w), items.shape
    flat = onehot.reshape(R * K, n_policies)
    for _ in range(NEWTON_STEPS):
        s = (flat @ theta.T).T.reshape(B, R, K)
        logits = np.where(risk[None], s[:, :, None, :], -np.inf)  # [B, R, K(i), K(j)]
        with np.errstate(invalid="ignore"):  # padding places have an empty risk set: 0 below
            pi = np.exp(logits - logits.max(axis=3, keepdims=True))
            pi = np.nan_to_num(pi / pi.sum(axis=3, keepdims=True))
        q = (pi @ onehot[None]).reshape(B, R * K, n_policies)  # where the probability of each place goes, [B, RK, P]
        wq = wc.reshape(B, R * K, 1) * q
        grad = (wc.reshape(B, R * K) @ flat) - wq.sum(axis=1) - theta / prior_sd**2
        outer = wq.transpose(0, 2, 1) @ q  # sum over places of w q q^T, [B, P, P]
        hess = outer - wq.sum(axis=1)[:, :, None] * np.eye(n_policies)[None] - eye
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        theta = theta - step
        if np.abs(step).max() < 1e-10:
            break
    return theta[0] if weights is None or np.ndim(weights) == 1 else theta


# ----------------------------------------------------------------------------------------------
# Win rates and position


def pair_outcomes(items: np.ndarray, ranks: np.ndarray, n_policies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wins [R, P, P]: 1 if p placed above q, 1/2 if tied; met [R, P, P]: both in the ranking; tied [R, P, P])."""
    R, K = items.shape
    wins = np.zeros((R, n_policies, n_policies))
    met = np.zeros_like(wins)
    tied = np.zeros_like(wins)
    for i in range(K):
        for j in range(K):
            both = (items[:, i] >= 0) & (items[:, j] >= 0) & (i != j)
            rows, p, q = np.nonzero(both)[0], items[both, i], items[both, j]
            better = ranks[both, i] < ranks[both, j]
            same = ranks[both, i] == ranks[both, j]
            np.add.at(met, (rows, p, q), 1.0)
            np.add.at(wins, (rows, p, q), better + 0.5 * same)
            np.add.at(tied, (rows, p, q), same * 1.0)
    return wins, met, tied


def position_shares(items: np.ndarray, ranks: np.ndarray, shown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share [R, S]: the share of the other completions that the one shown in slot s beat, ties half; present
    [R, S]). With no position bias every slot's mean share is 1/2 (the order shown is random)."""
    R, K = items.shape
    valid = items >= 0
    beats = (ranks[:, :, None] < ranks[:, None, :]) + 0.5 * (ranks[:, :, None] == ranks[:, None, :])
    pairs = valid[:, :, None] & valid[:, None, :] & ~np.eye(K, dtype=bool)[None]
    per_item = (beats * pairs).sum(axis=2) / np.maximum(pairs.sum(axis=2), 1)
    share = np.zeros((R, K))
    present = np.zeros((R, K))
    rows, cols = np.nonzero(valid)
    share[rows, shown[rows, cols]] = per_item[rows, cols]
    present[rows, shown[rows, cols]] = 1.0
    return share, present


# ----------------------------------------------------------------------------------------------
# Bootstrap


def cluster_weights(cluster: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """[B, R] weights: each resample draws as many clusters as there are, with replacement; a ranking weighs
    as often as its cluster was drawn."""
    ids, index = np.unique(cluster, return_inverse=True)
    counts = np.random.default_rng(seed).multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=samples)
    return counts[:, index].astype(float)


def interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2.5th, 97.5th percentile) over the first axis, ignoring resamples where a statistic is undefined."""
    with warnings.catch_warnings():  # a statistic undefined in every resample (p against itself) is simply nan
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(values, 2.5, axis=0), np.nanpercentile(values, 97.5, axis=0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def campaign_statistics(
    items, ranks, shown, cluster, policies: list[str], samples: int = 1000, seed: int = 0, chunk: int = 100
) -> dict:
    """Ratings, the win-rate matrix and the position check, each with its bootstrap 95% interval (JSON-able)."""
    items, ranks, shown, cluster = (np.asarray(a) for a in (items, ranks, shown, cluster))
    P = len(policies)
    weights = cluster_weights(cluster, samples, seed)
    # 1. Strengths, and their resamples in chunks (the Newton steps hold [chunk, R, K, K] arrays).
    theta = fit_plackett_luce(items, ranks, P)
    boot = [fit_plackett_luce(items, ranks, P, weights[i : i + chunk]) for i in range(0, samples, chunk)]
    t_lo, t_hi = interval(np.concatenate(boot))
    order = [int(p) for p in np.argsort(-theta, kind="stable")]
    ratings = {
        policies[p]: {
            "rating": float(theta[p]),
            "low": float(t_lo[p]),
            "high": float(t_hi[p]),
            "rank": order.index(p) + 1,
        }
        for p in range(P)
    }
    # 2. Win rates: a weighted mean over rankings, so a resample is one matrix product.
    wins, met, tied = pair_outcomes(items, ranks, P)
    rate = _ratio(wins.sum(0), met.sum(0))
    r_lo, r_hi = interval(_ratio(np.einsum("br,rpq->bpq", weights, wins), np.einsum("br,rpq->bpq", weights, met)))
    win_rates = {
        policies[p]: {
            policies[q]: {
                "rate": _num(rate[p, q]),
                "low": _num(r_lo[p, q]),
                "high": _num(r_hi[p, q]),
                "n": int(met[:, p, q].sum()),
                "ties": int(tied[:, p, q].sum()),
            }
            for q in range(P)
            if q != p
        }
        for p in range(P)
    }
    # 3. Position: the mean share each display slot won.
    share, present = position_shares(items, ranks, shown)
    slot = _ratio(share.sum(0), present.sum(0))
    s_lo, s_hi = interval(_ratio(weights @ share, weights @ present))
    position = [
        {
            "slot": s + 1,
            "win_share": _num(slot[s]),
            "low": _num(s_lo[s]),
            "high": _num(s_hi[s]),
            "n": int(present[:, s].sum()),
        }
        for s in range(items.shape[1])
        if present[:, s].sum()
    ]
    return {
        "ratings": ratings,
        "order": [policies[p] for p in order],
        "win_rates": win_rates,
        "position": position,
        "bootstrap": {"samples": samples, "clusters": int(len(np.unique(cluster))), "seed": seed},
    }


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
