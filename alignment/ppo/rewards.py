"""Where PPO's scores come from, and how they are normalised.

Three sources: the reward stage's adapter riding on the policy's base (scored by the PPO model's
`reward` role, no extra weights), a separate reward model (a reward folder trained on another base or
tokenizer, or a full model; it sees the decoded text), or a Python function `module:function`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from alignment.common.errors import ConfigError
from alignment.common.functions import load_batch_function
from alignment.ppo import losses as L
from alignment.ppo.config import PPORewardConfig
from alignment.runtime import models, tiny
from alignment.runtime.accelerator import local_loading
from reward.model import at_chance, load_reward_model, read_held_out, read_stats, score_texts


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


def call_function(fn, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """Scores [B] (float32) from a checked batch function (`load_batch_function`: one finite number per completion)."""
    return torch.tensor(fn(prompts, completions), dtype=torch.float32)


@dataclass
class RewardSource:
    """Where PPO's scores come from and how they are normalised (built by `load_source`)."""

    cfg: PPORewardConfig
    kind: str
    """`adapter` (scored by the PPO model's reward role), `model` (separate, sees text) or `function`."""
    normalize: str
    """`stats` (the reward folder's reward_stats.json), `running` or `none`."""
    stats: dict | None = None
    held_out: dict | None = None
    """The reward folder's eval.json (held-out accuracy on `pairs`), when it has one."""
    function: Callable | None = None
    monitor: Callable | None = None
    """Scored on every rollout and logged, never trained on (`reward.monitor`)."""
    model: torch.nn.Module | None = None
    tokenizer: object | None = None
    moments: RunningMoments = field(default_factory=lambda: RunningMoments())
    """Running mean/std of every raw score so far (`running` normalisation; saved in checkpoints)."""

    @property
    def needs_text(self) -> bool:
        """Whether scoring a rollout needs its decoded prompts and completions."""
        return self.kind != "adapter" or self.monitor is not None

    def monitored(self, prompt_texts: list[str], completions: list[str]) -> float | None:
        """Mean `reward.monitor` score of a rollout; None without a monitor."""
        if self.monitor is None:
            return None
        return call_function(self.monitor, prompt_texts, completions).mean().item()

    def raw_scores(self, adapter_scores, prompts: list, prompt_texts: list[str], completions: list[str], device):
        """Scores [B] of a rollout: the reward adapter's (already computed), the separate model's or the function's."""
        if self.kind == "adapter":
            return adapter_scores
        if self.kind == "function":
            return call_function(self.function, prompt_texts, completions).to(device)
        c = self.cfg
        return torch.tensor(
            score_texts(self.model, self.tokenizer, prompts, completions, c.batch_size, c.max_length), device=device
        )

    def normalized(self, raw: torch.Tensor, accelerator) -> torch.Tensor:
        """What PPO optimises: raw scores normalised by the reward stage's statistics or running moments."""
        floor = self.floor
        if self.normalize == "stats":
            return L.normalize_scores(raw, self.stats["mean"], max(self.stats["std"], floor))
        if self.normalize == "running":
            self.moments.update(accelerator.gather(raw.float()).cpu())  # every process holds the same moments
            return L.normalize_scores(raw, self.moments.mean, max(self.moments.std, floor))
        return raw.float()

    @property
    def chance(self) -> bool:
        """Whether the reward model ranked its held-out pairs no better than a coin (eval.json)."""
        return at_chance(self.held_out)

    @property
    def floor(self) -> float:
        """The least spread scores are divided by: `reward.min_std`, or 1 (never scaled up: the Bradley-Terry scale
        β is measured against) for a model no better than chance on its held-out pairs."""
        return max(1.0, self.cfg.min_std) if self.chance else self.cfg.min_std

    def spread_warning(self) -> str | None:
        """One line when normalising would scale up a model without preference: at chance, or spread under the floor."""
        if self.normalize != "stats" or self.stats["std"] >= self.floor:
            return None
        spread = f"the reward model's scores spread {self.stats['std']:.3g} (reward_stats.json)"
        if self.chance:
            h = self.held_out
            why = f"it ranks its held-out pairs no better than chance ({h['accuracy']:.3f} on {h['pairs']}, eval.json)"
        else:
            why = f"under reward.min_std {self.cfg.min_std:g}, it has learned almost no preference"
        return f"{spread}; {why}: its scores are divided by {self.floor:g}, not by their spread"


def load_source(c: PPORewardConfig, base_path: str, device) -> RewardSource:
    """The reward adapter on the policy's base, a separate reward model, or a function (see `reward_kind`)."""
    kind = reward_kind(c.path, c.function, base_path, c.separate)
    normalize = c.normalize if c.normalize != "auto" else ("none" if kind == "function" else "stats")
    source = RewardSource(c, kind, normalize, stats=read_stats(c.path) if normalize == "stats" else None)
    if kind == "function":
        source.function = load_batch_function(c.function, "reward.function")
    else:
        source.held_out = read_held_out(c.path)
    if c.monitor:
        source.monitor = load_batch_function(c.monitor, "reward.monitor")
    if kind == "model":
        with local_loading():  # one full copy per process, outside DeepSpeed
            source.model, source.tokenizer = load_reward_model(c.path, device=device)
    return source


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
