"""Stage 3: a scalar reward model trained on K-wise rankings with the InstructGPT Bradley-Terry loss.

    rlhf reward configs/reward.yaml output_dir=runs/tiny/reward
    accelerate launch --config_file launch/ddp.yaml -m alignment reward configs/reward.yaml
    accelerate launch --config_file launch/zero3.yaml -m alignment reward configs/reward_qwen0.5b.yaml

Each micro-batch holds `per_device_batch_size` ranked prompts; all their completions go through the
model in ONE forward pass (flattened, no padding completions), the scores are laid back out as
[prompts, K] and every C(K, 2) comparison of a prompt is scored from them (not 2 passes per pair).
A soft-labelled row (a pair's `chosen_probability`, a ranking's `scores`) trains every pair toward its
probability (`losses.soft_pair_losses`): given a judge's scores, the model learns them up to a constant.
Writes to output_dir: the adapter with its `score` head (PEFT format) or the full model, the
tokenizer, `reward_stats.json` (reward mean/std on a reference set, for PPO to normalise),
`eval.json` (held-out accuracy overall/per annotator/per rank gap, calibration, length correlation),
`uncertainty.safetensors` (the score head's last-layer Laplace posterior, reward/uncertainty.py: what
`rlhf sample acquisition.method=...` chooses tasks with), `config.yaml`, `metrics.jsonl`, `manifest.json`
and resumable `checkpoints/`.
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from accelerate.utils import gather_object

from alignment.common import files, manifest
from alignment.common.data import load_rows
from alignment.common.errors import ConfigError
from alignment.config.shared import (
    AdapterConfig,
    CheckpointConfig,
    HubOptions,
    ModelConfig,
    TrackingConfig,
    TrainConfig,
    require,
)
from alignment.runtime import adapters, loop, models, optim, saving
from alignment.runtime import logging as rlog
from alignment.runtime.accelerator import local_loading
from alignment.runtime.sampler import IndexStream, eval_batches, total_steps
from reward import data as rdata
from reward import losses, preference
from reward import model as rmodel

# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class RewardDataConfig:
    RANGES: ClassVar = {
        "test_size": ">= 0",
        "k": ">= 2",
        "limit": ">= 1",
        "max_length": ">= 2",
        "reference_size": ">= 1",
    }
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    path: str = ""
    """K-wise or TRL pairwise rows: a jsonl/json/parquet/csv file, a `datasets` folder, a hub id, or
    `builtin:reviews-rankings` (synthetic rankings with a known rule, see reward/rankings/synthetic.py)."""
    split: str = "train"
    """Split to train on (dataset folders and hub ids)."""
    eval_path: str | None = None
    """Held-out rankings; otherwise `test_size` of the prompts are held out from `path`."""
    eval_split: str = "test"
    """Split of eval_path to evaluate on (dataset folders and hub ids; files are read whole)."""
    test_size: float = 0.1
    """Held-out share (<1) or count (>=1) of distinct prompts when there is no eval_path; 0 for none."""
    unusable: Literal["drop", "error"] = "drop"
    """Rows with no comparison (chosen == rejected, or every completion tied under loss.ties=drop): `drop` skips
    and counts them (a warning), `error` stops at the first, naming its row. No usable row at all is an error."""
    k: int | None = None
    """Require exactly K completions per row (rows with another K are an error); None accepts any K >= 2."""
    limit: int | None = None
    """Use only the first N rows (quick runs)."""
    max_length: int = 512
    """Tokens per prompt + completion; longer texts lose tokens from the left (the score is read at the end)."""
    reference_path: str | None = None
    """SFT-style {prompt, completion} rows whose rewards give reward_stats.json; None uses training completions."""
    reference_size: int = 512
    """How many reference texts to score for reward_stats.json."""
    annotator_weights: Literal["equal", "estimated"] = "equal"
    """Each training ranking's weight in the loss: `equal`, or `estimated`: its row's `annotator_weight` (written by
    `rlhf rank export` from each annotator's estimated reliability), scaled to mean 1, so careless rankings count less."""


@dataclass
class RewardLossConfig:
    RANGES: ClassVar = {"tie_param": "> 0", "margin_scale": ">= 0", "center_coef": ">= 0"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    ties: Literal["drop", "rao_kupper", "davidson"] = "drop"
    """Tied completions: no comparison (`drop`), or a tie-aware likelihood (Rao-Kupper or Davidson)."""
    tie_param: float = 1.5
    """Rao-Kupper theta (> 1) or Davidson nu (> 0): how likely ties are at equal reward."""
    margin: Literal["none", "rank_gap", "given"] = "none"
    """Reward gap asked of a winner: none, margin_scale * rank gap, or the rows' `margin` column (pairwise)."""
    margin_scale: float = 1.0
    """Multiplier for the margin."""
    center_coef: float = 0.0
    """TRL's center_rewards_coefficient: coef * mean over pairs of (r_i + r_j)^2 keeps rewards near 0."""


@dataclass
class RewardEvalConfig:
    RANGES: ClassVar = {"batch_size": ">= 1", "calibration_bins": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    batch_size: int | None = None
    """Prompts per evaluation forward pass on each process; None uses train.per_device_batch_size."""
    calibration_bins: int = 10
    """Confidence bins for the expected calibration error of the Bradley-Terry probabilities."""


@dataclass
class RewardUncertaintyConfig:
    enabled: bool = True
    """Fit the score head's last-layer Laplace posterior after training (uncertainty.safetensors, d x d floats)."""
    prior_precision: float = 1.0
    """lambda, the Gaussian prior precision of the head's weight (> 0): larger means less uncertainty."""


@dataclass
class RewardConfig(HubOptions):
    RUN_PATHS: ClassVar = {
        "output_dir": "reward",
        "model.name_or_path": "sft",
        "data.path": "export/kwise",
        "data.eval_path": "export/kwise",
    }
    """With `run=runs/x`: trains on runs/x/sft with the export runs/x/export/kwise (its test split held out)."""
    run: str = ""
    """Run folder of the pipeline (runs/x): base model runs/x/sft, data runs/x/export/kwise (train, test split held
    out), output_dir runs/x/reward."""
    output_dir: str = ""
    """Run folder: adapter + score head (or full model), tokenizer, reward_stats.json, eval.json, checkpoints."""
    seed: int = 42
    """Seed for the head's init, the held-out split and the data order."""
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: RewardDataConfig = field(default_factory=RewardDataConfig)
    loss: RewardLossConfig = field(default_factory=RewardLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: RewardEvalConfig = field(default_factory=RewardEvalConfig)
    uncertainty: RewardUncertaintyConfig = field(default_factory=RewardUncertaintyConfig)

    def validate(self) -> None:
        require(self, "output_dir", "model.name_or_path", "data.path")
        if self.loss.ties == "rao_kupper" and self.loss.tie_param <= 1:
            raise ConfigError(
                f"'loss.tie_param' must be > 1 for Rao-Kupper (theta), got {self.loss.tie_param}", key="loss.tie_param"
            )
        if self.loss.ties == "davidson" and self.loss.tie_param <= 0:
            raise ConfigError(f"'loss.tie_param' must be > 0 for Davidson (nu), got {self.loss.tie_param}")
        if self.data.k is not None and self.data.k < 2:
            raise ConfigError(f"'data.k' must be >= 2, got {self.data.k}")
        if not self.uncertainty.prior_precision > 0:
            raise ConfigError(f"'uncertainty.prior_precision' must be > 0, got {self.uncertainty.prior_precision}")


# ----------------------------------------------------------------------------------------------
# Data


def load_data(cfg: RewardConfig) -> tuple[list[dict], list[dict]]:
    """(train rankings, held-out rankings): eval_path if set, else a seeded split by prompt; rankings without a
    preference dropped or refused (data.unusable); each training ranking's loss weight by data.annotator_weights."""
    train, held = rdata.load_split(cfg.data, cfg.loss.ties, cfg.seed, "reward", rlog.get())
    return rdata.apply_annotator_weights(train, cfg.data.annotator_weights), held


def reference_texts(cfg: RewardConfig, train_rankings: list[dict]) -> tuple[list[dict], str]:
    """Single-completion rankings whose rewards give reward_stats.json, and where they came from."""
    d = cfg.data
    if not d.reference_path:
        texts = [
            {**r, "completions": [c], "ranks": [1], "margin": None, "scores": None, "chosen_probability": None}
            for r in train_rankings
            for c in r["completions"]
        ]
        random.Random(cfg.seed).shuffle(texts)
        return texts[: d.reference_size], "training completions"
    texts = []
    for i, row in enumerate(load_rows(d.reference_path, "train", d.reference_size, key="data.reference_path")):
        where = f"{d.reference_path}:{i + 1}"
        if not rdata.is_text(row.get("completion")) or row.get("prompt") is None:
            raise ConfigError(f"{where}: reference rows need a 'prompt' and a non-empty 'completion'")
        texts.append(
            {
                "prompt": row["prompt"],
                "completions": [row["completion"]],
                "ranks": [1],
                "margin": None,
                "annotator": "reference",
                "where": where,
            }
        )
    return texts, d.reference_path


# ----------------------------------------------------------------------------------------------
# Scoring and evaluation


def batch_scores(model, batch: dict, device) -> torch.Tensor:
    """Scores [B, K_max] of every completion in a collated batch, from one forward pass."""
    flat = rmodel.scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
    return rdata.to_grid(flat, batch["slot"].to(device), *batch["ranks"].shape)


@torch.no_grad()
def predict(accelerator, model, examples: list[dict], batch_size: int, pad_id: int) -> list[list[float]]:
    """Scores of every completion of every example (same order), computed across processes, on every process."""
    if not examples:
        return []
    was_training = model.training
    model.eval()
    mine = []
    for indices, weights in eval_batches(
        len(examples), batch_size, accelerator.process_index, accelerator.num_processes
    ):
        batch = rdata.collate([examples[i] for i in indices], pad_id, weights)
        grid = batch_scores(model, batch, accelerator.device).cpu()
        mine += [(i, grid[b, : len(examples[i]["input_ids"])].tolist()) for b, i in enumerate(indices) if weights[b]]
    model.train(was_training)
    found = dict(gather_object(mine) if accelerator.num_processes > 1 else mine)
    return [found[i] for i in range(len(examples))]


def evaluation(cfg: RewardConfig, examples: list[dict], scores: list[list[float]]) -> dict:
    """Held-out metrics from per-completion scores: loss, pairwise accuracy (overall, per annotator, per rank
    gap), expected calibration error of sigmoid(r_better - r_worse), and reward-length correlation."""
    by_annotator, by_gap = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    diffs, rewards, lengths = [], [], []
    loss_sum = 0.0
    for e, s in zip(examples, scores):
        ranks = e["ranks"]
        for i in range(len(s)):
            for j in range(len(s)):
                if ranks[i] < ranks[j]:
                    right = int(s[i] > s[j])
                    for tally in (by_annotator[e["annotator"]], by_gap[ranks[j] - ranks[i]]):
                        tally[0] += right
                        tally[1] += 1
                    diffs.append(s[i] - s[j])
        rewards += s
        lengths += e["lengths"]
        soft = e.get("pair_probabilities")
        loss_sum += losses.kwise_loss(
            torch.tensor([s]),
            torch.tensor([ranks]),
            ties=cfg.loss.ties,
            tie_param=cfg.loss.tie_param,
            soft=torch.tensor([soft is not None]),
            soft_prob=None if soft is None else torch.tensor([soft]),
        ).item()
    correct = sum(t[0] for t in by_annotator.values())
    pairs = sum(t[1] for t in by_annotator.values())
    rewards_t = torch.tensor(rewards)
    return {
        "loss": loss_sum / max(len(examples), 1),
        "accuracy": correct / pairs if pairs else float("nan"),
        "pairs": pairs,
        "prompts": len(examples),
        "per_annotator": {a: t[0] / t[1] for a, t in sorted(by_annotator.items())},
        "per_rank_gap": {str(g): t[0] / t[1] for g, t in sorted(by_gap.items())},
        "ece": losses.expected_calibration_error(torch.sigmoid(torch.tensor(diffs)), cfg.eval.calibration_bins),
        "length_correlation": losses.pearson(rewards_t, torch.tensor(lengths, dtype=torch.float64)),
        "reward_mean": rewards_t.mean().item(),
        "reward_std": rewards_t.std().item() if len(rewards) > 1 else 0.0,
    }


def flat_metrics(report: dict, prefix: str = "eval") -> dict:
    """`eval/accuracy`, `eval/accuracy/annotator/<name>`, `eval/accuracy/rank_gap/<g>`, ... for logging."""
    out = {f"{prefix}/{k}": v for k, v in report.items() if not isinstance(v, dict)}
    out.update({f"{prefix}/accuracy/annotator/{a}": v for a, v in report["per_annotator"].items()})
    out.update({f"{prefix}/accuracy/rank_gap/{g}": v for g, v in report["per_rank_gap"].items()})
    return out


# ----------------------------------------------------------------------------------------------
# The stage


def train(cfg: RewardConfig) -> dict:
    # 1. Runtime: accelerator, logging, seed, resume point, resolved config beside the outputs.
    t = cfg.train
    run = loop.start("reward", cfg, t.gradient_accumulation_steps)
    accelerator, log = run.accelerator, run.log
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Data: rankings -> token ids per completion; held out by prompt.
    tokenizer = models.load_base_tokenizer(cfg.model)
    train_rankings, eval_rankings = load_data(cfg)
    train_set = [rdata.encode(tokenizer, r, cfg.data.max_length) for r in train_rankings]
    eval_set = [rdata.encode(tokenizer, r, cfg.data.max_length) for r in eval_rankings]
    ks = sorted({len(e["input_ids"]) for e in train_set})
    rlog.announce_builtins(log, "reward", cfg)
    log.info(
        f"reward: {len(train_set)} train rankings (K {ks[0]}-{ks[-1]}), {len(eval_set)} held out, {world} process(es)"
    )

    # 3. Model: base (the SFT model by default) + scalar head + adapter, optimizer, schedule.
    model = rmodel.build(cfg.model, cfg.adapter, tokenizer)
    trainable, total = adapters.count_parameters(model)
    log.info(f"reward: training {trainable:,} of {total:,} parameters ({cfg.adapter.method})")
    steps = total_steps(
        len(train_set), t.epochs, t.max_steps, t.per_device_batch_size, world, t.gradient_accumulation_steps
    )
    model, optimizer, scheduler = optim.setup(accelerator, model, t, steps, t.per_device_batch_size)

    # 4. Resume: weights, optimizer, schedule and RNG from the checkpoint; data position = step.
    state = loop.resume(run)
    eval_bs, pad_id = cfg.eval.batch_size or t.per_device_batch_size, tokenizer.pad_token_id

    # 4b. Guardrail: the held-out loss before the first step (the untrained head), then at each evaluation.
    held_out = loop.HeldOut(run, state, lambda: held_out_metrics(cfg, accelerator, model, eval_set, eval_bs, pad_id))

    # 5. Train: per micro-batch, one forward over all completions, K-wise loss over all pairs.
    stream = IndexStream(len(train_set), cfg.seed)
    model.train()
    window, grad_norm = loop.Window(), None
    for step in loop.progress(run, steps):
        for m in range(step * t.gradient_accumulation_steps, (step + 1) * t.gradient_accumulation_steps):
            indices = stream.batch(m, t.per_device_batch_size, rank, world)
            batch = rdata.collate([train_set[i] for i in indices], tokenizer.pad_token_id)
            with accelerator.accumulate(model):
                # 5a. Score all completions of all prompts in one pass as [B, K]; 5b. K-wise loss over all pairs.
                grid, loss = batch_loss(cfg.loss, model, batch, accelerator.device)
                # 5c. Optimise.
                grad_norm = loop.optimizer_step(accelerator, model, optimizer, scheduler, loss, t.max_grad_norm)
            window.add(loss=loss.item() / t.gradient_accumulation_steps, **batch_stats(grid.detach(), batch))
        window.steps += 1
        done = step + 1
        if loop.due(done, t.log_steps, steps, final=True):
            epoch = stream.epoch(done * t.gradient_accumulation_steps, t.per_device_batch_size, world)
            metrics = window_metrics(window, accelerator, t, scheduler, epoch, grad_norm)
            run.tracker.log(metrics, step=done)
            run.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", acc=f"{metrics['reward/accuracy']:.2f}")
            window.reset()
        if loop.due(done, t.eval_steps, steps):
            held_out(done)
        loop.save_checkpoint(run, done, steps, held_out=held_out.state_dict())

    # 6. Evaluate on the held-out prompts; reward statistics on the reference set for PPO.
    report: dict = {}
    if eval_set:
        report = evaluation(cfg, eval_set, predict(accelerator, model, eval_set, eval_bs, pad_id))
        flat = flat_metrics(report)
        run.tracker.log(flat, step=steps)
        held_out.watch.check(flat, steps, final=True)
    stats = reward_stats(cfg, accelerator, model, tokenizer, train_rankings, eval_bs)

    # 7. Save: adapter + score head (or full model) + tokenizer, stats, eval report, manifest.
    data = {"train_rankings": len(train_set), "eval_rankings": len(eval_set), "k": ks}
    save(cfg, run, model, tokenizer, stats, report, {"steps": steps, "data": data})
    # 8. Uncertainty: the head's Laplace posterior from the saved model (whatever the sharding), main process.
    if cfg.uncertainty.enabled and accelerator.is_main_process:
        save_uncertainty(cfg, run, train_rankings)
    accelerator.wait_for_everyone()
    for line in signal_warnings(report, stats):
        run.log.warning(f"reward: warning: {line}")
    loop.finish(run, f"{steps} steps{held_out_summary(report)}")
    return report


def held_out_metrics(cfg: RewardConfig, accelerator, model, eval_set: list[dict], batch_size: int, pad_id: int) -> dict:
    """The held-out evaluation as metrics (`eval/loss`, `eval/accuracy`, ...); {} without held-out rankings."""
    if not eval_set:
        return {}
    return flat_metrics(evaluation(cfg, eval_set, predict(accelerator, model, eval_set, batch_size, pad_id)))


def held_out_summary(report: dict) -> str:
    """The held-out figures for the stage's last line; empty without held-out rankings (data.test_size=0)."""
    if not report:
        return ""
    return (
        f"; held-out accuracy {report['accuracy']:.3f} on {report['pairs']} pairs, ECE {report['ece']:.3f}, "
        f"reward-length correlation {report['length_correlation']:.2f}"
    )


def signal_warnings(report: dict, stats: dict) -> list[str]:
    """One line each when the trained model shows no preference: held-out accuracy at or below chance, or scores
    that barely spread. Either way a policy trained on it optimises noise; the rankings are the place to look."""
    lines = []
    if rmodel.at_chance(report):
        lines.append(
            f"held-out accuracy {report['accuracy']:.3f} on {report['pairs']} pairs is no better than chance: "
            "check the rankings (eval.json per annotator) before training a policy on this model"
        )
    if stats["std"] < preference.MIN_SPREAD:
        lines.append(
            f"its scores spread {stats['std']:.3g} over {stats['count']} {stats['source']}, under {preference.MIN_SPREAD}: "
            "it has learned almost no preference"
        )
    return lines


def reward_stats(cfg: RewardConfig, accelerator, model, tokenizer, train_rankings: list[dict], batch_size: int) -> dict:
    """Mean and std of the rewards of the reference texts (reward_stats.json: what PPO normalises scores by)."""
    reference, source = reference_texts(cfg, train_rankings)
    ref_set = [rdata.encode(tokenizer, r, cfg.data.max_length) for r in reference]
    ref_scores = torch.tensor([s[0] for s in predict(accelerator, model, ref_set, batch_size, tokenizer.pad_token_id)])
    return {
        "mean": ref_scores.mean().item(),
        "std": ref_scores.std().item() if len(ref_scores) > 1 else 1.0,
        "count": len(ref_scores),
        "source": source,
    }


def batch_loss(c: RewardLossConfig, model, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B, K_max] of every completion from one forward pass, the K-wise loss: mean over prompts of the
    mean NLL over each prompt's comparisons)."""
    ranks, valid = batch["ranks"].to(device), batch["valid"].to(device)
    grid = batch_scores(model, batch, device)
    margins = None
    if c.margin == "rank_gap":
        margins = losses.rank_gap_margins(ranks, c.margin_scale)
    elif c.margin == "given":
        margins = batch["margins"].to(device) * c.margin_scale
    weights, soft, soft_prob = (batch[key].to(device) for key in ("loss_weights", "soft", "soft_prob"))
    return grid, losses.kwise_loss(
        grid, ranks, valid, margins, c.ties, c.tie_param, c.center_coef, weights, soft, soft_prob
    )


def batch_stats(grid: torch.Tensor, batch: dict) -> dict[str, float]:
    """Sums for the logged training metrics of one micro-batch: right pairs, pairs, margins, rewards, squares."""
    ranks, valid = batch["ranks"].to(grid.device), batch["valid"].to(grid.device)
    correct, pairs, margin_sum = losses.pairwise_accuracy(grid, ranks, valid)
    r = grid[valid].double().cpu()
    return {
        "correct": correct.sum().item(),
        "pairs": pairs.sum().item(),
        "margin": margin_sum.sum().item(),
        "reward": r.sum().item(),
        "reward_sq": r.square().sum().item(),
        "completions": r.numel(),
    }


def window_metrics(window: loop.Window, accelerator, t: TrainConfig, scheduler, epoch: float, grad_norm) -> dict:
    """Training metrics over the steps since the last log, summed over processes (so accuracy and throughput
    describe whole steps, not rank 0's share)."""
    s = window.totals(accelerator)
    world, pairs, n = accelerator.num_processes, max(s["pairs"], 1.0), max(s["completions"], 1.0)
    mean = s["reward"] / n
    rankings = window.steps * t.gradient_accumulation_steps * t.per_device_batch_size * world
    return {
        **loop.train_metrics(s["loss"] / world / window.steps, scheduler, epoch, grad_norm),
        "reward/accuracy": s["correct"] / pairs,
        "reward/margin": s["margin"] / pairs,
        "reward/mean": mean,
        "reward/std": math.sqrt(max(s["reward_sq"] / n - mean**2, 0.0)),
        "train/rankings_per_second": rankings / window.seconds,
        "train/completions_per_second": s["completions"] / window.seconds,
    }


def save(cfg: RewardConfig, run: loop.Run, model, tokenizer, stats: dict, report: dict, extra: dict) -> None:
    """Adapter + score head (or the full model) + tokenizer, reward_stats.json, eval.json and the manifest."""
    accelerator = run.accelerator
    adapters.save(accelerator, model, cfg.output_dir, tokenizer, run=cfg.run)
    if not accelerator.is_main_process:
        return
    files.write_json(os.path.join(cfg.output_dir, rmodel.STATS_FILE), stats)
    weights = "adapter" if adapters.is_peft(accelerator.unwrap_model(model)) else "weights"
    outputs = {"model": ".", weights: ".", "reward_stats": rmodel.STATS_FILE}
    inputs = manifest.stage_inputs(models.base_model_path(cfg.model), cfg.data.path, cfg.data.eval_path, trained=True)
    metrics = {
        **loop.last_metrics(cfg.output_dir, ("train/", "reward/")),
        **{f"eval/{k}": v for k, v in report.items() if not isinstance(v, dict)},
    }
    saving.write_manifest(run, inputs, outputs, metrics, report, {**extra, "reward_stats": stats})


def save_uncertainty(cfg: RewardConfig, run: loop.Run, train_rankings: list[dict]) -> None:
    """Fit and write uncertainty.safetensors beside the saved reward model, and list it in the manifest.

    Reloads the model as saved (one forward pass per training completion) rather than reading the training
    copy: under ZeRO-3 that copy's head is a shard on each process.
    """
    from reward import uncertainty

    with local_loading():  # main process alone: no collective zero.Init under ZeRO-3
        model, tokenizer = rmodel.load_reward_model(cfg.output_dir, device=run.accelerator.device)
    k = max((len(r["completions"]) for r in train_rankings), default=2)
    batch_size = (cfg.eval.batch_size or cfg.train.per_device_batch_size) * k  # texts, not prompts
    posterior = uncertainty.fit_laplace(
        model, tokenizer, train_rankings, cfg.uncertainty.prior_precision, batch_size, cfg.data.max_length
    )
    uncertainty.save(posterior, cfg.output_dir)
    data = manifest.read(cfg.output_dir)
    data["outputs"]["uncertainty"] = uncertainty.FILE
    data["uncertainty"] = {
        "method": "laplace-last-layer",
        "comparisons": posterior.comparisons,
        "prior_precision": posterior.prior_precision,
        "dim": int(posterior.weight.shape[0]),
    }
    files.write_json(os.path.join(cfg.output_dir, "manifest.json"), data)
    run.log.info(f"reward: uncertainty of the head from {posterior.comparisons} comparisons ({uncertainty.FILE})")
