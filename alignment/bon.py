"""`rlhf bon`: best-of-N (rejection sampling). Sample N completions per prompt from a policy and keep the one the
reward model scores highest: as a policy in `rlhf eval` and in campaigns, and as SFT data for the next round.

    rlhf eval configs/eval.yaml "policies={sft: runs/x/sft, bon4: 'bon:4:runs/x/sft'}" reward_model=runs/x/reward
    rlhf bon policy=runs/x/sft reward_model=runs/x/reward n=8 output_dir=runs/x/bon   # -> runs/x/bon/sft.jsonl
    rlhf sft configs/sft.yaml model.name_or_path=runs/x/sft data.path=runs/x/bon/sft.jsonl output_dir=runs/x/sft-bon

A policy spec `bon:N:POLICY` (N >= 1; POLICY any eval policy: a run folder, model folder, hub id) samples N
candidates with the eval's generation settings for every (prompt, draw) and keeps the one `reward_model`
scores highest (ties: the first). Its KL to the base policy is log N - (N - 1) / N (Stiennon et al. 2020; an
upper bound, Beirami et al. 2024), which the eval reports in place of a Monte Carlo estimate: the best-of-N
distribution has no log-probability to score. Sampling reuses `rlhf eval`'s (same settings, batch b drawn
under seed + b), so `rlhf bon`'s rows are what `bon:N` in an eval would pick.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch

from alignment.common import files, manifest
from alignment.common.errors import ConfigError, UserError
from alignment.config.loader import check_output_dir, save_config
from alignment.config.shared import require
from alignment.evaluate import EvalConfig, EvalDataConfig, EvalGenerationConfig, load_prompts, policy_path
from alignment.evaluate import sample_policy as sample_each
from alignment.runtime.formatting import prompt_text
from reward.model import load_reward_model, score_texts

PREFIX = "bon:"


def parse_spec(spec: str, key: str = "policy") -> tuple[int, str] | None:
    """(N, policy) of a `bon:N:POLICY` spec, None for any other policy; ConfigError naming `key` if malformed."""
    if not isinstance(spec, str) or not spec.startswith(PREFIX):
        return None
    n, _, policy = spec[len(PREFIX) :].partition(":")
    if not n.isdigit() or int(n) < 1 or not policy:
        raise ConfigError(f"'{key}': best-of-N is bon:N:POLICY with N >= 1 (e.g. bon:4:runs/x/sft), got '{spec}'")
    return int(n), policy


def base_policy(spec: str, key: str = "policy") -> str:
    """The policy a spec samples from: POLICY of `bon:N:POLICY`, the spec itself otherwise."""
    parsed = parse_spec(spec, key)
    return parsed[1] if parsed else spec


def check_policies(policies: dict[str, str], reward_model: str | None) -> None:
    """ConfigError unless every bon:N policy is well formed and a reward model is there to choose."""
    for name, spec in policies.items():
        if parse_spec(spec, f"policies.{name}") and not reward_model:
            raise ConfigError(f"'policies.{name}': {spec} keeps the reward model's best: set reward_model=...")


def best_of_groups(scores: list[float], n: int) -> list[int]:
    """Index of the highest score in each consecutive group of n (the first on ties): [len(scores) // n]."""
    if len(scores) % n:
        raise ValueError(f"{len(scores)} scores are not groups of {n}")
    return [g * n + max(range(n), key=lambda i: (scores[g * n + i], -i)) for g in range(len(scores) // n)]


def kl_bound(n: int) -> float:
    """KL(best-of-n || base) <= log n - (n - 1) / n nats."""
    return math.log(n) - (n - 1) / n


def sample_policy(cfg, name: str, path: str, prompts: list, device, n: int) -> dict:
    """An eval run dict (as evaluate.sample_policy returns) for `bon:n` of the policy at `path`: the eval's
    samples per prompt, each the reward model's best of n candidates (its score in `best_scores`), with the KL
    bound in place of log-probs."""
    g = cfg.generation
    wide = replace(cfg, generation=replace(g, num_samples=g.num_samples * n))
    run = sample_each(wide, f"{name} ({n} each)", path, prompts, device, with_logprobs=False)
    # Row r of the wide run is prompt r // (S * n), candidate r % n of draw (r // n) % S: groups of n consecutive rows.
    rows = [p for p in prompts for _ in range(g.num_samples * n)]
    prompt_strings = [prompt_text(run["tokenizer"], p) for p in rows]
    model, tokenizer = load_reward_model(cfg.reward_model, device=device)
    scores = score_texts(model, tokenizer, prompt_strings, run["texts"], g.batch_size)
    del model
    best = best_of_groups(scores, n)
    return {
        "tokenizer": run["tokenizer"],
        "batches": None,
        "logprobs": None,
        "texts": [run["texts"][i] for i in best],
        "lengths": [run["lengths"][i] for i in best],
        "ended": [run["ended"][i] for i in best],
        "scores": {},
        "kl": [kl_bound(n)] * len(best),
        "best_scores": [scores[i] for i in best],
    }


# ----------------------------------------------------------------------------------------------
# `rlhf bon`: rejection-sampled SFT rows


@dataclass
class BonDataConfig(EvalDataConfig):
    path: str = "builtin:reviews-prompts"
    """Prompt rows (`prompt`: a string or a message list): a file, a `datasets` folder, a hub id or builtin data."""
    split: str = "train"
    """Split to read: SFT data for the next round comes from training prompts, not held-out ones."""


@dataclass
class BonGenerationConfig(EvalGenerationConfig):
    num_samples: int = 1
    """Rows kept per prompt, each the reward model's best of its own n samples."""


@dataclass
class BonConfig:
    RANGES: ClassVar = {"n": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""
    RUN_PATHS: ClassVar = {"output_dir": "bon", "policy": "sft", "reward_model": "reward"}
    """With `run=runs/x`: samples runs/x/sft, scored by runs/x/reward, writes runs/x/bon."""
    run: str = ""
    """Run folder (runs/x): policy runs/x/sft, reward_model runs/x/reward, output_dir runs/x/bon."""
    output_dir: str = ""
    """Folder for sft.jsonl (the rows), manifest.json and config.yaml."""
    policy: str = ""
    """The policy to sample from (an eval policy: run folder, model folder, adapter folder, hub id)."""
    reward_model: str = ""
    """A reward-stage run folder: its score picks the best of each N."""
    n: int = 8
    """Candidates per kept completion."""
    seed: int = 0
    """Sampling seed: batch b is drawn under seed + b (as in `rlhf eval`)."""
    min_reward: float | None = None
    """Drop rows whose best reward is below this (None keeps every row)."""
    data: BonDataConfig = field(default_factory=BonDataConfig)
    generation: BonGenerationConfig = field(default_factory=BonGenerationConfig)
    """`rlhf eval`'s sampling settings; num_samples: rows kept per prompt."""

    def validate(self) -> None:
        require(self, "output_dir", "policy", "reward_model")
        if parse_spec(self.policy):
            raise ConfigError("'policy': give the policy itself; `rlhf bon` applies best-of-n=N to it")


def rejection_sample(cfg: BonConfig) -> dict:
    """Write output_dir/sft.jsonl: per prompt, generation.num_samples rows {"prompt", "completion", "reward", "n"},
    each the reward model's best of n completions of `policy`; returns the manifest."""
    cfg.validate()
    if not os.path.isdir(cfg.reward_model):
        raise UserError(f"reward_model: '{cfg.reward_model}' is not a folder (expected a reward-stage run folder)")
    check_output_dir(cfg.output_dir)
    started = time.time()
    policies = {"bon": f"{PREFIX}{cfg.n}:{cfg.policy}"}
    ecfg = EvalConfig(
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        policies=policies,
        kl=False,
        reward_model=cfg.reward_model,
        data=cfg.data,
        generation=cfg.generation,
    )
    prompts = load_prompts(ecfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = sample_policy(ecfg, "bon", policy_path(cfg.policy, "policy"), prompts, device, cfg.n)
    rows = [p for p in prompts for _ in range(cfg.generation.num_samples)]
    kept = [
        {"prompt": p, "completion": t, "reward": r, "n": cfg.n}
        for p, t, r in zip(rows, run["texts"], run["best_scores"])
        if cfg.min_reward is None or r >= cfg.min_reward
    ]
    if not kept:
        raise UserError(f"min_reward: no best-of-{cfg.n} completion reached {cfg.min_reward}; lower it")
    os.makedirs(cfg.output_dir, exist_ok=True)
    files.write_atomic(os.path.join(cfg.output_dir, "sft.jsonl"), "".join(json.dumps(r) + "\n" for r in kept))
    save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    mean = sum(r["reward"] for r in kept) / len(kept)
    return manifest.write(
        cfg.output_dir,
        "bon",
        inputs=manifest.stage_inputs(cfg.policy, cfg.data.path, reward=cfg.reward_model),
        outputs={"sft_rows": "sft.jsonl"},
        metrics={"rows": len(kept), "dropped": len(rows) - len(kept), "reward_mean": mean, "kl_bound": kl_bound(cfg.n)},
        extra={"n": cfg.n, "seconds": time.time() - started},
    )
