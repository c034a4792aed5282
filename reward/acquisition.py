"""Which completions people rank, and which tasks first: acquisition rules over M candidates per prompt.

Each task is a prompt with M sampled candidates. A rule chooses (a) the K of the M that go to people
and (b) an acquisition score per task; the ranking app serves tasks by score, highest first (ties: the
lower task index first, :func:`serving_order`). Every rule returns a :class:`Selection`.

| rule | value of a K-subset S of a task (pairs i < j in S) | reads |
| --- | --- | --- |
| `random` | a uniform draw (the baseline); S uniform | a seed |
| `uncertainty` | sum of Var(r_i - r_j): how unsure the model is of each pair's gap | score covariance [T, M, M] |
| `disagreement` | sum of the variance over draws/members of sigmoid(r_i - r_j): BALD-like, sees saturation | score samples [S, T, M] |
| `delta_ucb` | sum of abs(mu_i - mu_j) + beta (sigma_i + sigma_j): a large predicted gap plus exploration | mean, std [T, M] |
| `dopt` | log det(H + Fisher of S) - log det H, batch-aware across tasks | features, Sigma, mean |

`delta_ucb` is DeltaUCB of ActiveUltraFeedback (Melikidze et al. 2026, arXiv:2603.09692): for K = 2 it
picks argmax over ordered pairs of UCB_i - LCB_j = (mu_i + beta sigma_i) - (mu_j - beta sigma_j), which
is the pair maximising abs(mu_i - mu_j) + beta (sigma_i + sigma_j); for K > 2 we sum that pair value over
the subset. It follows "large-gap pairs teach the policy most" with an optimistic bonus for the unsure.

`dopt` is the D-optimal design of "Reviving the Classics" (Shen et al. 2025), past-aware and batch-aware:
the Bradley-Terry Fisher information of a ranking of S is Phi_S^T L_S Phi_S, with L_S the graph
Laplacian of S's C(K, 2) pairs weighted by p (1 - p) at the current means, so its gain is
log det(I + L_S C_S) (C_S the score covariance of S; Sylvester's identity: a K x K determinant). Tasks
are chosen greedily, each given the ones chosen before it: after a choice the covariance is updated by
a rank-P Woodbury update (no refactorisation), and a task's score is its gain when chosen.
Gains only shrink as rankings are added (log det is submodular), so stale gains are upper bounds and
the greedy is lazy (Minoux 1978): each step re-evaluates only the tasks whose stale bound is highest.
(Exact for fixed subsets; a task's K-subset is itself re-chosen greedily when re-evaluated, which in rare
cases can beat its stale bound, so lazy and exhaustive re-evaluation may then differ.)

K-subsets are chosen greedily (exact subset search is a densest-subgraph problem): start from the best
pair, then add the candidate that adds most value, K - 2 times. O(T K M) utility reads for additive
values; `dopt` evaluates M determinants of size <= K per step. Ties go to the lowest index (the first
maximum: `torch.argmax`); every rule is deterministic (`random` and posterior draws for a seed).
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from reward import uncertainty as U

METHODS = ("random", "uncertainty", "disagreement", "delta_ucb", "dopt")


@dataclasses.dataclass(frozen=True)
class Selection:
    """What goes to people: K of M candidates per task, and each task's acquisition score."""

    chosen: torch.Tensor
    """[T, K] long: indices into each task's M candidates, ascending."""
    scores: torch.Tensor
    """[T] float64: serve the highest first; ties go to the lower task index."""


def serving_order(scores: torch.Tensor) -> torch.Tensor:
    """[T] task indices by descending score, ties by ascending index."""
    return torch.argsort(scores, descending=True, stable=True)


def _check_k(m: int, k: int) -> None:
    if not 2 <= k <= m:
        raise ValueError(f"K must be between 2 and the number of candidates M = {m}, got {k}")


# ----------------------------------------------------------------------------------------------
# Subset choice


def greedy_subsets(
    utility: torch.Tensor, k: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen [T, K] ascending, value [T]) maximising the sum of utility[i, j] over pairs of the subset, greedily.

    utility: [T, M, M] symmetric (the diagonal is ignored). First the best pair i < j (ties: smallest i,
    then j), then K - 2 times the candidate whose utilities to the chosen ones sum highest (ties: lowest index).
    valid: [T, M] bool, candidates that may be chosen (a repeated or empty text may not); each task needs >= K.
    """
    t, m, _ = utility.shape
    _check_k(m, k)
    utility = utility.double()
    if valid is not None:  # -inf to and from an invalid candidate: never in the first pair, never added
        utility = utility.masked_fill(~(valid[:, :, None] & valid[:, None, :]), float("-inf"))
    upper = torch.ones(m, m, dtype=torch.bool, device=utility.device).triu(1)
    flat = utility.masked_fill(~upper, float("-inf")).reshape(t, m * m).argmax(-1)
    rows = torch.arange(t, device=utility.device)
    first, second = flat // m, flat % m
    value = utility[rows, first, second]
    gain = utility[rows, first] + utility[rows, second]  # [T, M]: what each candidate would add
    taken = torch.zeros(t, m, dtype=torch.bool, device=utility.device)
    taken[rows, first] = taken[rows, second] = True
    for _ in range(k - 2):
        pick = gain.masked_fill(taken, float("-inf")).argmax(-1)
        value = value + gain[rows, pick]
        gain = gain + utility[rows, pick]
        taken[rows, pick] = True
    chosen = taken.nonzero()[:, 1].reshape(t, k)  # row-major: each row's indices ascending
    return chosen, value


def pair_weights(mean: torch.Tensor) -> torch.Tensor:
    """[T, M, M] p (1 - p) with p = sigmoid(mu_i - mu_j): a comparison's expected Fisher weight (0 on the diagonal)."""
    p = torch.sigmoid(mean.double()[:, :, None] - mean.double()[:, None, :])
    eye = torch.eye(mean.shape[1], dtype=torch.bool, device=mean.device)
    return (p * (1 - p)).masked_fill(eye, 0.0)


def subset_gains(cov: torch.Tensor, weights: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
    """[...] log det(I + L_S C_S): the information gain of ranking each subset, subsets [..., s] into M.

    cov, weights: [..., M, M] score covariance and pair weights of the task the subset belongs to;
    L_S = diag(W_S 1) - W_S is the weighted Laplacian of the subset's comparison graph.
    """
    index_rows, index_cols = subsets[..., :, None], subsets[..., None, :]
    c = torch.take_along_dim(torch.take_along_dim(cov, index_rows, -2), index_cols, -1)
    w = torch.take_along_dim(torch.take_along_dim(weights, index_rows, -2), index_cols, -1)
    laplacian = torch.diag_embed(w.sum(-1)) - w
    eye = torch.eye(subsets.shape[-1], dtype=cov.dtype, device=cov.device)
    return torch.linalg.slogdet(eye + laplacian @ c).logabsdet


def logdet_subsets(
    cov: torch.Tensor, weights: torch.Tensor, k: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen [T, K] ascending, gain [T]): greedy K-subsets maximising :func:`subset_gains` per task.

    cov, weights: [T, M, M]. The first pair maximises log(1 + w_ij Var(r_i - r_j)) (the K = 2 gain).
    valid: [T, M] bool, candidates that may be chosen (as in :func:`greedy_subsets`).
    """
    t, m, _ = cov.shape
    _check_k(m, k)
    first_pair = torch.log1p(weights * U.pair_variances(cov))
    chosen, gain = greedy_subsets(first_pair, 2, valid)
    candidates = torch.arange(m, device=cov.device)
    for _ in range(k - 2):
        trial = torch.cat([chosen[:, None, :].expand(t, m, chosen.shape[1]), candidates.expand(t, m)[..., None]], -1)
        gains = subset_gains(cov[:, None], weights[:, None], trial)  # [T, M]
        taken = torch.zeros(t, m, dtype=torch.bool, device=cov.device).scatter(1, chosen, True)
        gains = gains.masked_fill(taken if valid is None else taken | ~valid, float("-inf"))
        pick = gains.argmax(-1)
        gain = gains[torch.arange(t, device=cov.device), pick]
        chosen = torch.cat([chosen, pick[:, None]], -1).sort(-1).values
    return chosen, gain


# ----------------------------------------------------------------------------------------------
# The rules


def random_selection(n_tasks: int, m: int, k: int, seed: int, valid: torch.Tensor | None = None) -> Selection:
    """K uniform of M (of the valid ones, [T, M] bool) per task and a uniform score per task, from `seed` alone."""
    _check_k(m, k)
    generator = torch.Generator().manual_seed(seed)
    keys = torch.rand(n_tasks, m, generator=generator)
    if valid is not None:
        keys = keys.masked_fill(~valid.cpu(), 2.0)  # after every valid one
    chosen = keys.argsort(-1)[:, :k].sort(-1).values
    return Selection(chosen, torch.rand(n_tasks, generator=generator, dtype=torch.float64))


def uncertainty(cov: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> Selection:
    """The K-subset with the most predictive variance of score differences; cov [T, M, M] score covariances."""
    return Selection(*greedy_subsets(U.pair_variances(cov.double()), k, valid))


def disagreement(samples: torch.Tensor, k: int, chunk: int = 1024, valid: torch.Tensor | None = None) -> Selection:
    """The K-subset whose preferences sigmoid(r_i - r_j) vary most over samples [S, T, M] (ensemble or posterior).

    The variance is over the S members (population variance); `chunk` tasks at a time bound the [S, M, M] memory.
    """
    blocks = []
    for start in range(0, samples.shape[1], chunk):
        block = samples[:, start : start + chunk].double()
        blocks.append(torch.sigmoid(block[..., :, None] - block[..., None, :]).var(0, correction=0))
    m = samples.shape[2]
    utility = torch.cat(blocks) if blocks else torch.zeros(0, m, m, dtype=torch.float64)
    return Selection(*greedy_subsets(utility, k, valid))


def delta_ucb(
    mean: torch.Tensor, std: torch.Tensor, k: int, beta: float = 1.0, valid: torch.Tensor | None = None
) -> Selection:
    """DeltaUCB: the K-subset with the largest |mu_i - mu_j| + beta (sigma_i + sigma_j) summed over its pairs.

    mean, std: [T, M] predicted scores and their standard deviations.
    """
    mean, std = mean.double(), std.double()
    utility = (mean[:, :, None] - mean[:, None, :]).abs() + beta * (std[:, :, None] + std[:, None, :])
    return Selection(*greedy_subsets(utility, k, valid))


def task_covariances(features: torch.Tensor, sigma: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[T, M, M] float64 score covariances phi_i^T Sigma phi_j of each task's candidates, features [T, M, d]."""
    blocks = []
    for start in range(0, features.shape[0], chunk):
        phi = features[start : start + chunk].double()
        blocks.append(torch.einsum("tmd,de,tne->tmn", phi, sigma, phi))
    m = features.shape[1]
    return torch.cat(blocks) if blocks else sigma.new_zeros((0, m, m))


def d_optimal(
    features: torch.Tensor,
    mean: torch.Tensor,
    sigma: torch.Tensor,
    k: int,
    budget: int | None = None,
    refresh: int = 32,
    inplace: bool = False,
    valid: torch.Tensor | None = None,
) -> Selection:
    """Batch-aware D-optimal: tasks chosen one by one by their information gain given those chosen before.

    features: [T, M, d] of the candidates; mean: [T, M] predicted scores (for the pair weights);
    sigma: [d, d] the current posterior covariance of the head (`uncertainty.covariance`). Chooses
    `budget` tasks (default all); a chosen task's score is its gain when chosen (kept non-increasing
    along the choice order), the others score their gain after the last choice, below every chosen one.
    inplace: update `sigma` itself (a float64 tensor on the features' device) instead of a d x d copy.
    valid: [T, M] bool, candidates that may be chosen (as in :func:`greedy_subsets`).

    Cost: every task's score covariance once (T M d^2), then per chosen ranking of P = C(K, 2) pairs a
    Woodbury update: P d^2 for Sigma and T M d P for every task's covariance. Lazy greedy (Minoux): a
    gain computed under an earlier Sigma bounds the gain now from above (the log-det gain is
    submodular), so each step re-evaluates only the best-bounded stale tasks, `refresh` at a time,
    until the best bound is fresh.
    """
    t, m, _ = features.shape
    _check_k(m, k)
    budget = t if budget is None else min(budget, t)
    phi = features  # stays in its dtype: chunks go to float64
    sigma = sigma if inplace else sigma.to(features.device, torch.float64, copy=True)
    weights = pair_weights(mean.to(features.device))
    cov = task_covariances(phi, sigma)
    valid = torch.ones(t, m, dtype=torch.bool, device=phi.device) if valid is None else valid.to(phi.device)
    chosen, bound = logdet_subsets(cov, weights, k, valid)
    fresh = torch.ones(t, dtype=torch.bool, device=phi.device)
    open_ = torch.ones(t, dtype=torch.bool, device=phi.device)
    scores = torch.zeros(t, dtype=torch.float64, device=phi.device)
    floor = float("inf")
    for _ in range(budget):
        task = _lazy_best(cov, weights, k, chosen, bound, fresh, open_, refresh, valid)
        floor = min(floor, float(bound[task]))
        scores[task], open_[task] = floor, False
        pairs = torch.tensor(list(itertools.combinations(chosen[task].tolist(), 2)), device=phi.device)
        x = phi[task, pairs[:, 0]].double() - phi[task, pairs[:, 1]].double()
        sigma, cov = _add_ranking(phi, sigma, cov, x, weights[task, pairs[:, 0], pairs[:, 1]])
        fresh[:] = False
    if open_.any():
        rest = open_.nonzero()[:, 0]
        chosen[rest], gains = logdet_subsets(cov[rest], weights[rest], k, valid[rest])
        below = torch.nextafter(torch.tensor(floor, dtype=torch.float64), torch.tensor(float("-inf")))
        scores[rest] = torch.minimum(gains, below.to(gains.device))
    return Selection(chosen, scores)


def _lazy_best(cov, weights, k, chosen, bound, fresh, open_, refresh, valid) -> int:
    """The open task of largest gain now (ties: lowest index); refreshes stale bounds in place, best first."""
    while True:
        order = serving_order(bound.masked_fill(~open_, float("-inf")))[: int(open_.sum())]
        if fresh[order[0]]:
            return int(order[0])
        stale = order[~fresh[order]][:refresh]
        chosen[stale], bound[stale] = logdet_subsets(cov[stale], weights[stale], k, valid[stale])
        fresh[stale] = True


def _add_ranking(phi, sigma, cov, x, w, chunk: int = 1024):
    """Woodbury: Sigma <- (Sigma^-1 + X^T W X)^-1 for a ranking's pairs x [P, d] and weights w [P], and every
    task's score covariance with it (one pass over the features per ranking, not one per pair)."""
    s = sigma @ x.T  # [d, P]
    root = w.sqrt()
    inner = torch.eye(len(w), dtype=sigma.dtype, device=sigma.device) + root[:, None] * (x @ s) * root[None, :]
    g = root[:, None] * torch.cholesky_inverse(torch.linalg.cholesky(inner)) * root[None, :]
    sigma.addmm_(s, g @ s.T, alpha=-1)  # in place: no second d x d matrix
    # a [T, M, P]: each candidate's covariance with the new comparison directions. Read in the features' own
    # precision (at least float32: ~1e-7 relative error per downdate), not converted to float64 at every step.
    low = torch.float64 if phi.dtype == torch.float64 else torch.float32
    a = torch.cat([phi[start : start + chunk].to(low) @ s.to(low) for start in range(0, phi.shape[0], chunk)])
    a = a.double()
    return sigma, cov - torch.einsum("tmp,pq,tnq->tmn", a, g, a)


# ----------------------------------------------------------------------------------------------
# From a reward model's posterior to a selection


def select(
    method: str,
    posterior: U.Laplace,
    features: torch.Tensor,
    k: int,
    seed: int = 0,
    beta: float = 1.0,
    budget: int | None = None,
    samples: int = 32,
    valid: torch.Tensor | None = None,
) -> Selection:
    """Apply rule `method` to T tasks of M candidates with features [T, M, d] under a Laplace posterior.

    seed: `random`'s draw and `disagreement`'s posterior draws (`samples` of them); beta: `delta_ucb`'s
    exploration weight; budget: how many tasks `dopt` chooses batch-aware (the rest score below them);
    valid: [T, M] bool, the candidates that may go to people (default all; each task needs >= K).
    """
    t, m, _ = features.shape
    if not torch.isfinite(features).all():
        raise ValueError("candidate features are not all finite")
    if valid is not None and (tuple(valid.shape) != (t, m) or bool((valid.sum(-1) < k).any())):
        raise ValueError(f"valid must be [T, M] = [{t}, {m}] with at least K = {k} valid candidates per task")
    if method == "random":
        return random_selection(t, m, k, seed, valid)
    if method == "disagreement":
        return disagreement(U.sample_scores(posterior, features, samples, seed), k, valid=valid)
    mean, cov = U.predict(posterior, features)
    if valid is not None:
        valid = valid.to(mean.device)
    if method == "uncertainty":
        return uncertainty(cov, k, valid)
    if method == "delta_ucb":
        return delta_ucb(mean, cov.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt(), k, beta, valid)
    if method == "dopt":
        sigma = U.covariance(posterior).to(features.device)
        return d_optimal(features, mean.to(features.device), sigma, k, budget, inplace=True, valid=valid)
    raise ValueError(f"acquisition method must be one of {', '.join(METHODS)}, got '{method}'")
