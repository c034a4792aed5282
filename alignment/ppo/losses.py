"""PPO math as pure torch functions: masked statistics, KL, rewards, GAE, losses, KL controllers.

Shapes: B = batch, T = response length. Masks are 0/1 (bool or float) and mark the real response
tokens: everything up to and including the first EOS (`alignment.runtime.generation.response_mask`).
Log-probs and entropy of the taken tokens live in `alignment.runtime.logprobs`.
Every function upcasts half-precision inputs to float32 before doing arithmetic, because ratios,
exponentials and variances of bf16 values are where PPO silently goes wrong.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64, so tests can compare against exact references)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


# ----------------------------------------------------------------------------------------------
# Masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x where mask is 1: over everything (dim=None, -> scalar) or along `dim`. x, mask [...]."""
    x, mask = _fp32(x), _fp32(mask)
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all positions where mask is 1 -> scalar; Bessel-corrected if `unbiased`."""
    x, mask = _fp32(x), _fp32(mask)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(f"unbiased masked_var needs at least 2 unmasked values, got {int(n)}")
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked values; [B, T] -> [B, T], zero where mask is 0.

    With shift_mean=False the mean is added back (only the scale changes), which is what rewards
    want: whitening rewards must not change their sign structure.
    """
    x, mask = _fp32(x), _fp32(mask)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    # padding positions would otherwise hold (0 - mean) / std, which a later unmasked sum would pick up
    return whitened * mask


# ----------------------------------------------------------------------------------------------
# KL, rewards, normalisation


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index [B] of the last real token of each row of a prefix mask [B, T] (-1 for an empty row)."""
    return mask.long().sum(-1) - 1


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(pi || pi_ref): logp - logp_ref. [B, T] -> [B, T]; unbiased, can be < 0."""
    return _fp32(logprobs) - _fp32(ref_logprobs)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): (r - 1) - log r with r = p_ref / p. [B, T] -> [B, T].

    Unbiased and never negative (Schulman, "Approximating KL divergence"); expm1 keeps it exact
    near r = 1, where (exp(x) - 1) - x would cancel to zero in floating point.
    """
    log_r = _fp32(ref_logprobs) - _fp32(logprobs)
    return torch.expm1(log_r) - log_r


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate by name (`k1` or `k3`): [B, T] -> [B, T]."""
    if estimator == "k1":
        return kl_k1(logprobs, ref_logprobs)
    if estimator == "k3":
        return kl_k3(logprobs, ref_logprobs)
    raise ValueError(f"unknown KL estimator '{estimator}'; use 'k1' or 'k3'")


def normalize_scores(scores: torch.Tensor, mean: float, std: float, eps: float = 1e-8) -> torch.Tensor:
    """(score - mean) / std with the reward stage's statistics: [B] -> [B]."""
    return (_fp32(scores) - mean) / (std + eps)


def penalize_no_eos(scores: torch.Tensor, contains_eos: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtract `penalty` from the score of every response without EOS: scores [B], contains_eos [B] bool -> [B].

    Subtracting (TRL's `missing_eos_penalty`) rather than replacing the score keeps the reward
    model's ordering among truncated responses.
    """
    scores = _fp32(scores)
    return torch.where(contains_eos.bool(), scores, scores - penalty)


def penalize(scores: torch.Tensor, flagged: torch.Tensor, penalty: float) -> torch.Tensor:
    """Subtract `penalty` from the score of every flagged response: scores [B], flagged [B] bool -> [B]."""
    scores = _fp32(scores)
    return torch.where(flagged.bool(), scores - penalty, scores)


def compute_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """Per-token rewards: -beta * kl on real tokens, plus the score at the last real token.

    scores [B], kl [B, T], mask [B, T] (prefix mask, at least one real token per row) -> [B, T],
    zero on padding.
    """
    mask = _fp32(mask)
    rewards = -beta * _fp32(kl) * mask
    last = last_token_index(mask)
    if (last < 0).any():
        raise ValueError("compute_rewards: a response has no real token to carry its score")
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += _fp32(scores)
    return rewards


# ----------------------------------------------------------------------------------------------
# Advantages


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses.

    rewards, values, mask [B, T] -> (advantages [B, T], returns [B, T]), both zero on padding.
    The episode ends at the last real token, so the value after it is 0 (no bootstrap):
    delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1} * m_{t+1}.
    Returns are A + V, the value-function targets.
    """
    mask = _fp32(mask)
    rewards, values = _fp32(rewards) * mask, _fp32(values) * mask
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        # values were masked above, so next_value is 0 after the last real token: the episode ends
        # there without bootstrapping, whatever the value head said on padding
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = adv
        next_adv, next_value = adv, values[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


# ----------------------------------------------------------------------------------------------
# Losses


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped PPO surrogate, averaged over real tokens. All inputs [B, T].

    Returns (loss, clipfrac, approxkl, ratio_mean), all scalars; only `loss` carries gradient.
    approxkl is the k3 estimator mean((ratio - 1) - log ratio): unbiased for KL(old || new),
    never negative, and exactly 0 when ratio == 1 (the first minibatch of every update).
    """
    logratio = _fp32(logprobs) - _fp32(old_logprobs)
    ratio = torch.exp(logratio)
    advantages = _fp32(advantages)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
        approxkl = masked_mean(torch.expm1(logratio) - logratio, mask)
        ratio_mean = masked_mean(ratio, mask)
    return loss, clipfrac, approxkl, ratio_mean


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2), averaged over real tokens. Inputs [B, T].

    V_clip = V_old + clamp(V - V_old, -cliprange_value, cliprange_value). Returns (loss, clipfrac).
    """
    values, old_values, returns = _fp32(values), _fp32(old_values), _fp32(returns)
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac


# ----------------------------------------------------------------------------------------------
# KL coefficient controllers (state_dict/load_state_dict so resume is exact)


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, value: float):
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019: move beta towards the KL `target` with a proportional error clipped to +-0.2.

    beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon), where n_steps is the
    number of episodes (samples) in the batch that measured `current_kl`.
    """

    def __init__(self, init_value: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
        self.value, self.target, self.horizon = float(init_value), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), float(state["horizon"])


def kl_controller(kind: str, init_value: float, target: float | None = None, horizon: float | None = None):
    """Build a KL controller by name: `fixed` or `adaptive` (which needs target and horizon)."""
    if kind == "fixed":
        return FixedKLController(init_value)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError("adaptive KL controller needs `target` and `horizon`")
        return AdaptiveKLController(init_value, target, horizon)
    raise ValueError(f"unknown KL controller '{kind}'; use 'fixed' or 'adaptive'")


# ----------------------------------------------------------------------------------------------
# RLOO and GRPO: k samples per prompt, sequence-level advantages, no value function
#
# Layout: the k samples of a prompt are contiguous. Scores come as [P * k] (prompt p's samples at rows
# p*k .. p*k + k - 1, what `prompts.repeat_interleave(k)` before generation gives) or as [P, k];
# advantages come back in the shape given.


def _groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores [P * k] or [P, k] -> [P, k] float32+ minus each group's first score, checking the layout.

    Every group statistic here is shift-invariant; the shift makes a group of equal scores exactly 0
    (no rounding of mean(r) - r) and spares float32 the cancellation of large common offsets.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k (samples per prompt) must be an integer >= 2 for a group baseline, got {k!r}")
    if scores.dim() == 2 and scores.shape[1] != k:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not hold k={k} samples per prompt")
    if scores.dim() == 1 and scores.numel() % k or scores.dim() not in (1, 2):
        raise ValueError(f"scores of shape {tuple(scores.shape)} are not P * k = P * {k} samples")
    grouped = _fp32(scores).reshape(-1, k)
    return grouped - grouped[:, :1]


def rloo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out advantages A_i = r_i - mean_{j != i} r_j over the k samples of a prompt: [P*k] or [P, k] -> same.

    Ahmadian et al. 2024 (and TRL's RLOOTrainer). The baseline of sample i does not depend on sample i,
    so A_i * grad log pi(y_i) is an unbiased policy gradient; A_i = k / (k - 1) * (r_i - mean_j r_j).
    To regularise towards the reference as TRL does, pass the KL-penalised scores (`kl_penalized_scores`).
    """
    grouped = _groups(scores, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).view(scores.shape)


GRPO_SCALES = ("group", "batch", "none")


def grpo_advantages(scores: torch.Tensor, k: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages (r - mean_group) / (std + eps): [P*k] or [P, k] -> same.

    scale: `group` divides by the std of the prompt's k scores (Shao et al. 2024, DeepSeekMath), `batch` by
    the std of all scores (TRL's `scale_rewards="batch"`), `none` not at all (Dr. GRPO, Liu et al. 2025:
    dividing by a per-prompt std weights prompts by how little their samples differ). The std is the
    unbiased (Bessel-corrected) one with eps = 1e-4 added, as in TRL's GRPOTrainer (its `nanstd`) and
    torch.std's default, so advantages match TRL's for the same scores. A group whose scores are all
    equal gets advantage 0 whatever the scale.
    """
    grouped = _groups(scores, k)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale == "group":
        centred = centred / (grouped.std(-1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (_fp32(scores).std() + eps)  # of the scores, not of the shifted groups
    elif scale != "none":
        raise ValueError(f"scale must be one of {', '.join(GRPO_SCALES)}, got '{scale}'")
    return centred.view(scores.shape)


def kl_penalized_scores(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    estimator: str = "k1",
) -> torch.Tensor:
    """scores - beta * sum_t kl_t over real tokens: scores [B], log-probs and mask [B, T] -> [B].

    The KL as a reward penalty (RLOO's form; TRL's RLOOTrainer with k1): with k1 the summed penalty is
    log pi(y) - log pi_ref(y), and A * grad log pi(y) on these scores is an unbiased gradient of
    J = E[r] - beta * KL(pi || pi_ref), whose optimum is pi_ref * exp(r / beta) / Z. Use the old
    (rollout) log-probs: the penalty is part of the reward, not differentiated.
    """
    kl = torch.where(mask.bool(), kl_per_token(logprobs, ref_logprobs, estimator), 0.0)
    return _fp32(scores) - beta * kl.sum(-1)


def sequence_to_tokens(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One advantage per sequence on each of its real tokens: [B], mask [B, T] -> [B, T] (0 on padding)."""
    return _fp32(advantages)[:, None] * _fp32(mask)


AGGREGATIONS = ("sequence_mean", "token_mean", "constant")


def aggregation_weights(
    mask: torch.Tensor, aggregation: str = "sequence_mean", max_length: int | None = None, total_tokens=None
) -> torch.Tensor:
    """Token weights w [B, T] (0 on padding) such that a loss is sum(w * per_token_loss): mask [B, T] -> [B, T].

    sequence_mean: mean over each sequence's tokens, then over sequences (GRPO; TRL `loss_type="grpo"`);
      a sequence's gradient is divided by its length, so the step is not along grad J (Dr. GRPO's length
      bias). With the KL inside the scores the advantages still vanish at pi_ref * exp(r / beta) / Z.
    token_mean: mean over every real token of the batch (TRL `bnpo`), or with `total_tokens` (the real
      tokens of the whole optimizer step, over micro-batches and processes) that step's token mean when
      the caller sums the micro-batch losses (DAPO; TRL's default `dapo` with `num_items_in_batch`).
      sequence_mean and constant need no such count: equal micro-batches average to the step's value.
    constant: sum over tokens / (B * max_length) (Dr. GRPO; TRL `dr_grpo`, max_length its
      `max_completion_length`, default T): every token of every sequence weighs the same, fixed amount,
      so the gradient is a constant multiple of the REINFORCE gradient.
    """
    m = _fp32(mask)
    B, T = m.shape
    if aggregation == "sequence_mean":
        return m / m.sum(-1, keepdim=True).clamp(min=1) / B
    if aggregation == "token_mean":
        return m / (m.sum().clamp(min=1) if total_tokens is None else total_tokens)
    if aggregation == "constant":
        return m / (B * (max_length or T))
    raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got '{aggregation}'")


class GroupPolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar, with gradient: policy + kl_coef * kl
    policy: torch.Tensor  # the clipped surrogate under the aggregation weights
    kl: torch.Tensor  # the aggregated per-token k3 KL (0 when no reference is given)
    clipfrac: torch.Tensor  # weighted by the same token weights, as are approxkl and ratio
    approxkl: torch.Tensor
    ratio: torch.Tensor


def group_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
    aggregation: str = "sequence_mean",
    max_length: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    total_tokens=None,
) -> GroupPolicyLoss:
    """RLOO / GRPO loss: PPO's clipped surrogate with one advantage per sequence, and optionally GRPO's KL term.

    logprobs, old_logprobs, mask [B, T]; advantages [B] (sequence level, broadcast to tokens) or [B, T].
    The surrogate is `policy_loss` with the `aggregation_weights` (aggregation, max_length, total_tokens) as its
    token weights. With ref_logprobs
    and kl_coef > 0, kl_coef * (k3 KL per token, same weights) is added (GRPO's loss-term form, TRL's
    `beta`). Note: on-policy, the k3 term's gradient is that of KL(pi_ref || pi) per visited state, not
    of KL(pi || pi_ref), so this form does not aim at J's optimum; the k1 reward penalty
    (`kl_penalized_scores`) does: at pi_ref * exp(r / beta) / Z every penalised score equals
    beta * log Z and every RLOO / GRPO advantage is 0.
    """
    weights = aggregation_weights(mask, aggregation, max_length, total_tokens)
    if advantages.dim() == 1:
        advantages = sequence_to_tokens(advantages, mask)
    # policy_loss takes a weighted mean sum(w x) / sum(w); times sum(w) it is the weighted sum
    surrogate, clipfrac, approxkl, ratio = policy_loss(logprobs, old_logprobs, advantages, weights, cliprange)
    surrogate = surrogate * weights.sum()
    kl = torch.zeros((), dtype=surrogate.dtype, device=surrogate.device)
    if ref_logprobs is not None and kl_coef:
        kl = torch.where(weights > 0, kl_k3(logprobs, ref_logprobs) * weights, 0.0).sum()
    return GroupPolicyLoss(surrogate + kl_coef * kl, surrogate, kl, clipfrac, approxkl, ratio)
