"""PPO math as pure torch functions: masked statistics, KL, rewards, GAE, losses, KL controllers.

Shapes: B = batch, T = response length. Masks are 0/1 (bool or float) and mark the real response
tokens: everything up to and including the first EOS (`alignment.runtime.generation.response_mask`).
Log-probs and entropy of the taken tokens live in `alignment.runtime.logprobs`.
Every function upcasts half-precision inputs to float32 before doing arithmetic, because ratios,
exponentials and variances of bf16 values are where PPO silently goes wrong.
"""

from __future__ import annotations

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
