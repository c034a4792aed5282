"""Where PPO's scores come from, and how they are normalised.

Three sources: the reward stage's adapter riding on the policy's base (scored by the PPO model's
`reward` role, no extra weights), a separate reward model (a reward folder trained on another base or
tokenizer, or a full model; it sees the decoded text), or a Python function `module:function`.
"""

from __future__ import annotations

import math
import os

import torch

from alignment.config import ConfigError, UserError
from alignment.runtime import models, tiny


def reward_kind(path: str | None, function: str | None, base_path: str, separate: bool) -> str:
    """`adapter` (on the policy's base), `model` (separate) or `function`."""
    if function:
        return "function"
    if not os.path.isdir(path):
        raise ConfigError(f"reward.path: '{path}' is not a folder (expected a reward-stage run folder)")
    if separate or not models.is_adapter_folder(path):
        return "model"
    recorded = tiny.resolve(models.adapter_base(path))
    same = os.path.exists(recorded) and os.path.samefile(recorded, base_path)
    return "adapter" if same else "model"


def call_function(fn, spec: str, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Scores [B] (float32) from a reward function, checked: one finite number per completion."""
    out = fn(prompts, completions)
    try:
        scores = torch.as_tensor([float(x) for x in out], dtype=torch.float32)
    except (TypeError, ValueError):
        raise UserError(f"reward.function: {spec} must return a list of numbers, got {type(out).__name__}") from None
    if scores.numel() != len(completions):
        raise UserError(f"reward.function: {spec} returned {scores.numel()} scores for {len(completions)} completions")
    if not torch.isfinite(scores).all():
        raise UserError(f"reward.function: {spec} returned a non-finite score")
    return scores


class RunningMoments:
    """Mean and variance of every score seen so far (Chan et al.'s parallel merge); exact to resume from JSON."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.double()
        n = xs.numel()
        batch_mean, batch_var = xs.mean().item(), xs.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])
