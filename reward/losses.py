"""K-wise Bradley-Terry on rankings (InstructGPT), as pure functions over one score per completion.

A batch element is one ranked prompt: K completions, their scores and their ranks (1 = best, ties
share a value). Every pair (i, j) with rank_i < rank_j is a comparison "i beats j"; the loss of a
prompt is the mean negative log-likelihood over its C(K, 2) comparisons, and the batch loss is the
mean over prompts, so a prompt weighs the same whatever its K (InstructGPT, section 3.5). Prompts of
different K are padded to the largest K and carry a `valid` mask.

Ties are dropped, or scored by a tie-aware likelihood:
- Rao-Kupper (theta > 1): P(i > j) = sigmoid(d - log theta), P(tie) = (theta^2 - 1) / ((1 + theta e^-d)(1 + theta e^d))
- Davidson (nu > 0): P(i > j) = e^(d/2) / (e^(d/2) + e^(-d/2) + nu), P(tie) = nu / (e^(d/2) + e^(-d/2) + nu)
with d = r_i - r_j. Both reduce to Bradley-Terry's sigmoid(d) as theta -> 1 / nu -> 0.

A soft label (a pair's chosen_probability, a ranking's scores) gives every pair a probability instead
(`soft_pair_losses`, the cross-entropy of sigmoid(d) against it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TIES = ("drop", "rao_kupper", "davidson")


def valid_pairs(valid: torch.Tensor) -> torch.Tensor:
    """[B, K, K]: every pair i < j of valid completions (valid: [B, K] bool), each pair once."""
    k = valid.shape[1]
    upper = torch.ones(k, k, dtype=torch.bool, device=valid.device).triu(1)
    return valid[:, :, None] & valid[:, None, :] & upper


def pair_masks(ranks: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(better [B, K, K]: i ranked strictly above j, tied [B, K, K]: i < j share a rank), both valid.

    ranks: [B, K] ints, 1 = best; valid: [B, K] bool (False for padding). Each tied pair appears once.
    """
    better = valid[:, :, None] & valid[:, None, :] & (ranks[:, :, None] < ranks[:, None, :])
    tied = valid_pairs(valid) & (ranks[:, :, None] == ranks[:, None, :])
    return better, tied


def rank_gap_margins(ranks: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Margins [B, K, K]: scale * (rank_j - rank_i), the reward gap asked of i over j (used where i beats j)."""
    gap = (ranks[:, None, :] - ranks[:, :, None]).to(torch.float32)
    return scale * gap.clamp(min=0)


def pair_log_likelihoods(
    diff: torch.Tensor, ties: str = "drop", tie_param: float = 1.5
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log P(i beats j), log P(i ties j)) for score differences `diff` = r_i - r_j (any shape).

    The tie term is None when ties are dropped. tie_param is Rao-Kupper's theta (> 1) or Davidson's nu (> 0).
    """
    if ties == "drop":
        return F.logsigmoid(diff), None
    if ties == "rao_kupper":
        if tie_param <= 1:
            raise ValueError(f"Rao-Kupper needs theta > 1, got {tie_param}")
        alpha = math.log(tie_param)
        win = F.logsigmoid(diff - alpha)
        tie = math.log(math.expm1(2 * alpha)) - F.softplus(alpha - diff) - F.softplus(alpha + diff)
        return win, tie
    if ties == "davidson":
        if tie_param <= 0:
            raise ValueError(f"Davidson needs nu > 0, got {tie_param}")
        log_nu = torch.full_like(diff, math.log(tie_param))
        norm = torch.logsumexp(torch.stack([diff / 2, -diff / 2, log_nu]), dim=0)
        return diff / 2 - norm, log_nu - norm
    raise ValueError(f"ties must be one of {', '.join(TIES)}, got '{ties}'")


def soft_pair_losses(
    scores: torch.Tensor, prob: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-prompt loss [B], has a pair [B]) of soft labels: the mean over a prompt's valid pairs i < j of the
    cross-entropy of sigmoid(r_i - r_j) against prob[b, i, j] = P(i beats j), -(p log s(d) + (1 - p) log s(-d)).

    Minimised where r_i - r_j = logit(p) (a scored row's labels sigmoid(score_i - score_j): r = scores + a
    constant); at p = 1 it is the Bradley-Terry NLL of "i beats j". scores [B, K], prob [B, K, K], valid [B, K].
    """
    pairs = valid_pairs(valid)
    diff = scores[:, :, None] - scores[:, None, :]
    p = prob.to(diff.dtype)
    nll = -(p * F.logsigmoid(diff) + (1 - p) * F.logsigmoid(-diff))
    count = pairs.sum((1, 2))
    return torch.where(pairs, nll, 0.0).sum((1, 2)) / count.clamp(min=1), count > 0


def kwise_loss(
    scores: torch.Tensor,
    ranks: torch.Tensor,
    valid: torch.Tensor | None = None,
    margins: torch.Tensor | None = None,
    ties: str = "drop",
    tie_param: float = 1.5,
    center_coef: float = 0.0,
    weights: torch.Tensor | None = None,
    soft: torch.Tensor | None = None,
    soft_prob: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar loss: mean over prompts of the mean pair NLL over that prompt's comparisons (+ centering).

    scores: [B, K] float; ranks: [B, K] ints (1 = best); valid: [B, K] bool (default all True);
    margins: [B, K, K] gap asked of i over j where i beats j (default 0); it shifts the strict
    comparisons only. center_coef: TRL's `center_rewards_coefficient`, applied as in TRL to every pair
    of valid completions: coef * mean over pairs of (r_i + r_j)^2 (for K = 2 exactly TRL's term).
    Prompts with no comparison (all tied, ties dropped) contribute nothing. weights: [B] per-prompt factors
    (the annotator's weight, scaled to mean 1 over the data), each prompt's NLL times its weight, same denominator.
    soft: [B] bool, the prompts labelled by pair probabilities soft_prob [B, K, K] instead of ranks
    (`soft_pair_losses`: every pair counts, ties and margins do not apply).
    """
    scores = scores.float()
    if valid is None:
        valid = torch.ones_like(ranks, dtype=torch.bool)
    better, tied = pair_masks(ranks, valid)
    diff = scores[:, :, None] - scores[:, None, :]
    win_diff = diff if margins is None else diff - margins.to(diff.dtype)
    win, _ = pair_log_likelihoods(win_diff, ties, tie_param)
    nll = -(win * better).sum((1, 2))
    count = better.sum((1, 2))
    if ties != "drop":
        _, tie = pair_log_likelihoods(diff, ties, tie_param)
        nll = nll - (tie * tied).sum((1, 2))
        count = count + tied.sum((1, 2))
    has = count > 0
    per_prompt = nll / count.clamp(min=1)
    if soft is not None and bool(soft.any()):
        soft_losses, soft_has = soft_pair_losses(scores, soft_prob, valid)
        per_prompt, has = torch.where(soft, soft_losses, per_prompt), torch.where(soft, soft_has, has)
    if weights is not None:
        per_prompt = per_prompt * weights.to(per_prompt.dtype)
    loss = (per_prompt * has).sum() / has.sum().clamp(min=1)
    if center_coef:
        pairs = valid_pairs(valid)
        sums = scores[:, :, None] + scores[:, None, :]
        n_pairs = pairs.sum((1, 2))
        per_prompt_center = (sums.square() * pairs).sum((1, 2)) / n_pairs.clamp(min=1)
        with_pairs = n_pairs > 0
        loss = loss + center_coef * (per_prompt_center * with_pairs).sum() / with_pairs.sum().clamp(min=1)
    return loss


def pairwise_accuracy(
    scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(correct [B], comparisons [B], summed margin [B]) over strict comparisons per prompt.

    A comparison is correct when the better-ranked completion scores strictly higher (as TRL counts);
    the margin is r_better - r_worse. Sums, so callers can reduce over prompts and processes.
    """
    if valid is None:
        valid = torch.ones_like(ranks, dtype=torch.bool)
    better, _ = pair_masks(ranks, valid)
    diff = scores.float()[:, :, None] - scores.float()[:, None, :]
    correct = ((diff > 0) & better).sum((1, 2))
    return correct, better.sum((1, 2)), (diff * better).sum((1, 2))


# ----------------------------------------------------------------------------------------------
# Evaluation metrics on the same comparisons


def expected_calibration_error(prob_better: torch.Tensor, bins: int = 10) -> float:
    """ECE of Bradley-Terry probabilities; prob_better: [N] = sigmoid(r_better - r_worse) per comparison.

    Each comparison predicts the higher-scored completion with confidence max(p, 1 - p) and is right
    when p > 0.5; ECE = sum over equal-width confidence bins of |accuracy - confidence| * share of N.
    """
    if prob_better.numel() == 0:
        return float("nan")
    p = prob_better.double()
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double()
    index = (confidence * bins).long().clamp(max=bins - 1)
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            gap = (correct[members].mean() - confidence[members].mean()).abs().item()
            ece += gap * members.sum().item() / p.numel()
    return ece


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two [N] vectors; NaN when either is constant or N < 2."""
    x, y = x.double(), y.double()
    if x.numel() < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.square().sum() * y.square().sum()).sqrt()
    if denominator == 0:
        return float("nan")
    return float((x * y).sum() / denominator)
