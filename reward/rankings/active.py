"""Active ranking in `rlhf sample`: which prompts, and which K of their M candidates, go to people.

    rlhf sample configs/sample.yaml acquisition.method=dopt acquisition.reward=runs/tiny/reward \
        acquisition.candidates=8 acquisition.budget=200

With `acquisition.method` set, sampling draws M = `acquisition.candidates` completions per prompt instead
of K. The reward model in `acquisition.reward` (its adapter and its `uncertainty.safetensors`, the score
head's Laplace posterior written by `rlhf reward`) reads each candidate's features; a rule of
reward/acquisition.py then chooses K of the M per prompt and scores each prompt, and the `budget` best
prompts become tasks, each with its score as the task's `priority` (the ranking app serves the highest
first). A `random_share` of the budget is drawn uniformly from the other prompts, with K uniform of M:
rankings no rule chose, which keep the data from covering only what the model already finds hard.

Only distinct, non-empty candidates can be chosen (the first of repeated texts); a prompt with fewer
than K of them is skipped and counted, as `rlhf sample` does without acquisition. `random` needs no
reward model (a baseline for rounds: same M, same budget).

What the rules read (`acquisition.features`): `head` is the reward model's own posterior, the Laplace
approximation of its score head on the features the head reads (uncertainty.safetensors). `tokens` is a
surrogate: a linear Bradley-Terry model on hashed bag-of-token counts of the completions, fitted (MAP +
Laplace) at sampling time on the rankings the reward model was trained on (its config.yaml's data.path).
The head's features are re-learnt by every round's training (the LoRA and, in the tiny config, the
embeddings), so a posterior on them describes a model the next round no longer has; token counts stay put,
and which tokens make a text better is what such a reward model learns first. Costs no forward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

from alignment.common.errors import UserError

METHODS = ("random", "uncertainty", "disagreement", "delta_ucb", "dopt")  # reward.acquisition.METHODS


@dataclass
class AcquisitionConfig:
    method: Literal["none", "random", "uncertainty", "disagreement", "delta_ucb", "dopt"] = "none"
    """Active ranking rule (reward/acquisition.py); `none` samples K per prompt and keeps every prompt."""
    candidates: int = 8
    """M, completions sampled per prompt, of which K go to people (>= k)."""
    reward: str = ""
    """Reward run folder (adapter + uncertainty.safetensors) that scores the candidates; not needed by `random`."""
    budget: int | None = None
    """Tasks to create: the prompts with the highest acquisition scores; None keeps every usable prompt."""
    beta: float = 1.0
    """delta_ucb's exploration weight on the score standard deviations."""
    samples: int = 32
    """disagreement: posterior draws of the score head."""
    seed: int | None = None
    """Seed of the random rule, the random share and the posterior draws; None uses the stage's seed."""
    random_share: float = 0.0
    """Share of the budget drawn uniformly from the prompts the rule did not choose (K uniform of M)."""
    features: Literal["head", "tokens"] = "head"
    """What the rule's posterior is over: `head`, the reward model's score head (uncertainty.safetensors);
    `tokens`, a bag-of-tokens surrogate fitted on the reward model's training rankings (see the module docstring)."""
    token_dim: int = 1024
    """features=tokens: hashed bag-of-tokens width d (the posterior is d x d float64)."""
    prior_precision: float = 1.0
    """features=tokens: the surrogate's Gaussian prior precision (> 0)."""

    def check(self, k: int) -> None:
        """One-line UserError naming the key, for any out-of-range setting."""
        if self.method == "none":
            return
        checks = [
            ("candidates", self.candidates >= k, f">= k = {k}"),
            ("budget", self.budget is None or self.budget >= 1, ">= 1"),
            ("beta", self.beta >= 0, ">= 0"),
            ("samples", self.samples >= 2, ">= 2"),
            ("random_share", 0 <= self.random_share <= 1, "in [0, 1]"),
            ("token_dim", 1 <= self.token_dim <= 8192, "in [1, 8192] (a d x d float64 posterior)"),
            ("prior_precision", self.prior_precision > 0, "> 0"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise UserError(f"'acquisition.{key}' must be {want}, got {getattr(self, key)}")
        if self.method != "random" and not self.reward:
            raise UserError(
                f"'acquisition.reward' is required for acquisition.method={self.method}: a reward run folder "
                "(written by `rlhf reward`, with uncertainty.safetensors)"
            )

    @property
    def active(self) -> bool:
        return self.method != "none"

    @property
    def needs_reward(self) -> bool:
        return self.method not in ("none", "random")


def load_posterior(acq: AcquisitionConfig):
    """The reward folder's Laplace posterior (checked before any sampling: a missing file is one line)."""
    from reward import uncertainty

    if not acq.needs_reward:
        return None
    if not os.path.isdir(acq.reward):
        raise UserError(f"acquisition.reward: '{acq.reward}' does not exist (a reward run folder)")
    if acq.features == "tokens":
        return token_surrogate(acq)
    try:
        return uncertainty.load(acq.reward)
    except UserError as e:
        raise UserError(f"acquisition.reward: {e} (train it with `rlhf reward`, uncertainty.enabled=true)") from None


def valid_candidates(texts: list[str]) -> list[bool]:
    """Which candidates may go to people: non-empty, and the first of any repeated text."""
    seen, out = set(), []
    for t in texts:
        out.append(bool(t.strip()) and t not in seen)
        seen.add(t)
    return out


def reward_max_length(folder: str, default: int = 1024) -> int:
    """The `data.max_length` the reward model was trained with (its config.yaml), so features match training."""
    import yaml

    try:
        with open(os.path.join(folder, "config.yaml")) as f:
            return int((yaml.safe_load(f) or {}).get("data", {}).get("max_length", default))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return default


def reward_data_path(folder: str) -> str:
    """The rankings the reward run in `folder` was trained on (its config.yaml's data.path)."""
    import yaml

    try:
        with open(os.path.join(folder, "config.yaml")) as f:
            path = (yaml.safe_load(f) or {}).get("data", {}).get("path")
    except (OSError, yaml.YAMLError, AttributeError) as e:
        raise UserError(f"acquisition.reward: cannot read {folder}/config.yaml ({type(e).__name__})") from None
    if not isinstance(path, str) or not path:
        raise UserError(f"acquisition.reward: {folder}/config.yaml names no data.path (needed by features=tokens)")
    return path


def token_features(tokenizer, completions: list, dim: int) -> torch.Tensor:
    """[N, dim] hashed bag-of-token counts of the completions (the `tokens` surrogate's features)."""
    from reward import uncertainty
    from reward.model import completion_text

    ids = [tokenizer(completion_text(c), add_special_tokens=False)["input_ids"] for c in completions]
    return uncertainty.token_counts(ids, dim)


def token_surrogate(acq: AcquisitionConfig):
    """The `tokens` surrogate's posterior, fitted on the reward run's training rankings with its tokenizer."""
    from transformers import AutoTokenizer

    from reward import uncertainty
    from reward.data import load_rankings

    path = reward_data_path(acq.reward)
    try:
        rows = load_rankings(path, "train", key="acquisition.reward's data.path")
        _, completions, pairs = uncertainty.comparisons(rows)
    except UserError as e:
        raise UserError(f"acquisition.features=tokens: {e}") from None
    if not len(pairs):
        raise UserError(f"acquisition.features=tokens: '{path}' holds no comparisons to fit the surrogate on")
    phi = token_features(AutoTokenizer.from_pretrained(acq.reward), completions, acq.token_dim)
    return uncertainty.fit_surrogate(phi, pairs, acq.prior_precision)


@torch.no_grad()
def features(acq: AcquisitionConfig, rows: list[tuple], device, batch_size: int = 16) -> list[torch.Tensor]:
    """[M, d] float32 features of each row's candidates (rows: (prompt, texts, ...)) under the reward model."""
    from reward import uncertainty
    from reward.model import load_reward_model

    if not rows:
        return []
    if acq.features == "tokens":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(acq.reward)
        return [token_features(tokenizer, list(r[1]), acq.token_dim) for r in rows]
    model, tokenizer = load_reward_model(acq.reward, device=device)
    phi, _ = uncertainty.candidate_features(
        model, tokenizer, [r[0] for r in rows], [list(r[1]) for r in rows], batch_size, reward_max_length(acq.reward)
    )
    return list(phi.cpu())


@dataclass
class Choice:
    """One task to create: a row's index, the K candidates chosen, its acquisition score and how it was picked."""

    row: int
    chosen: list[int]
    score: float
    pick: Literal["rule", "random"]


def choose(acq: AcquisitionConfig, k: int, valid: torch.Tensor, phi: torch.Tensor | None, posterior, seed: int):
    """The tasks to create from T prompts of M candidates, highest score first.

    valid: [T, M] bool (each row >= K valid); phi: [T, M, d] features (None for `random`). The rule takes
    budget - round(random_share * budget) tasks by its scores (reward.acquisition.serving_order); the
    random share is drawn uniformly from the rest, with K uniform of the valid candidates.
    """
    from reward import acquisition

    t, m = valid.shape
    budget = t if acq.budget is None else min(acq.budget, t)
    n_random = round(acq.random_share * budget)
    n_rule = budget - n_random
    if acq.method == "random":
        selection = acquisition.random_selection(t, m, k, seed, valid)
    else:
        selection = acquisition.select(
            acq.method, posterior, phi, k, seed=seed, beta=acq.beta, budget=n_rule, samples=acq.samples, valid=valid
        )
    scores = torch.nan_to_num(selection.scores.double().cpu(), nan=0.0, posinf=1e300, neginf=-1e300)
    order = acquisition.serving_order(scores)
    uniform = acquisition.random_selection(t, m, k, seed + 1, valid)
    rest = order[n_rule:]
    drawn = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 2))[:n_random]]
    picks = [Choice(int(i), selection.chosen[i].tolist(), float(scores[i]), "rule") for i in order[:n_rule]]
    picks += [Choice(int(i), uniform.chosen[i].tolist(), float(scores[i]), "random") for i in drawn]
    return sorted(picks, key=lambda c: (-c.score, c.row))
