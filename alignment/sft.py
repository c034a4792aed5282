"""Stage 1: supervised fine-tuning of a causal LM on prompt/completion or chat data.

    rlhf sft configs/sft.yaml output_dir=runs/sft
    accelerate launch --config_file launch/ddp.yaml -m alignment sft configs/sft.yaml
    accelerate launch --config_file launch/zero3.yaml -m alignment sft configs/sft_qwen0.5b.yaml

Reads rows in TRL's formats and writes to output_dir: the adapter (PEFT format) or full weights,
the tokenizer, `merged/` (adapter merged into the base: the next stages' model), `config.yaml`,
`metrics.jsonl`, `manifest.json`, and resumable `checkpoints/`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from accelerate.utils import gather_object

from alignment.common import files, manifest
from alignment.common.data import load_rows
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
from alignment.runtime.formatting import IGNORE, collate, encode_sft, pack
from alignment.runtime.sampler import IndexStream, eval_batches, total_steps

# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class SFTDataConfig:
    RANGES: ClassVar = {"eval_size": ">= 0", "max_length": ">= 2", "limit": ">= 1"}
    """Allowed values (`alignment.config.shared.check_ranges`), checked when the config loads."""

    path: str = ""
    """jsonl/json/parquet/csv file, a `datasets` folder, a hub id, or `builtin:reviews-sft`."""
    split: str = "train"
    """Split to train on (for dataset folders and hub ids)."""
    eval_path: str | None = None
    """Separate eval data; otherwise `eval_size` rows are held out from `path`."""
    eval_size: float = 0.0
    """Held-out share (<1) or row count (>=1) when there is no eval_path."""
    max_length: int = 512
    """Tokens per example; longer ones are truncated from the right."""
    packing: bool = False
    """Concatenate examples into full max_length rows (attention stays within each example)."""
    limit: int | None = None
    """Use only the first N rows (quick runs)."""
    completion_only_loss: bool = True
    """Loss on completions / assistant turns only; False trains on the prompt too."""


@dataclass
class SFTConfig(HubOptions):
    RUN_PATHS: ClassVar = {"output_dir": "sft"}
    """With `run=runs/x`: output_dir defaults to runs/x/sft."""
    run: str = ""
    """Run folder of the pipeline (runs/x): output_dir defaults to runs/x/sft, where the next stages read."""
    output_dir: str = ""
    """Output folder: adapter, tokenizer, merged model, checkpoints, metrics.jsonl, manifest.json."""
    seed: int = 42
    """Seed for weights init, data order and dropout."""
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    save_merged: bool = True
    """Also save adapter+base merged into one model under output_dir/merged (the next stages' base)."""

    def validate(self) -> None:
        require(self, "output_dir", "model.name_or_path", "data.path")


# ----------------------------------------------------------------------------------------------
# The stage


def load_examples(cfg: SFTConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Tokenized train and eval examples; eval held out by a seeded split when no eval_path is set."""
    d = cfg.data
    rows = load_rows(d.path, d.split, d.limit)
    encoded = [
        encode_sft(tokenizer, r, d.max_length, d.completion_only_loss, f"{d.path}:{i + 1}") for i, r in enumerate(rows)
    ]
    if d.eval_path:
        eval_rows = load_rows(d.eval_path, "test" if os.path.isdir(d.eval_path) else "train", key="data.eval_path")
        eval_set = [
            encode_sft(tokenizer, r, d.max_length, d.completion_only_loss, f"{d.eval_path}:{i + 1}")
            for i, r in enumerate(eval_rows)
        ]
        return encoded, eval_set
    n_eval = int(d.eval_size if d.eval_size >= 1 else round(d.eval_size * len(encoded)))
    if n_eval <= 0:
        return encoded, []
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    held = set(order[:n_eval])
    return [e for i, e in enumerate(encoded) if i not in held], [encoded[i] for i in sorted(held)]


def token_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy over labelled tokens, number of labelled tokens)."""
    labels = batch.pop("labels")
    # Prompt tuning prepends virtual tokens to the logits; the real tokens are always the last T.
    logits = model(**batch, use_cache=False).logits[:, -labels.size(1) :][:, :-1].float()
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, (targets != IGNORE).sum()


def real_tokens(batch: dict) -> int:
    """Tokens that are not padding (packed rows have no padding and no attention mask)."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


@torch.no_grad()
def evaluate(accelerator, model, examples: list[dict], batch_size: int, pad_id: int) -> dict:
    if not examples:
        return {}
    model.eval()
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for indices, weights in eval_batches(
        len(examples), batch_size, accelerator.process_index, accelerator.num_processes
    ):
        batch = collate([examples[i] for i in indices], pad_id, weights)
        loss, count = token_loss(model, {k: v.to(accelerator.device) for k, v in batch.items()})
        total += torch.stack([loss.double(), count.double()])
    total = accelerator.reduce(total, reduction="sum")
    mean = (total[0] / total[1].clamp(min=1)).item()
    model.train()
    return {"eval/loss": mean, "eval/perplexity": math.exp(min(mean, 50.0))}


def train(cfg: SFTConfig) -> dict:
    # 1. Runtime: accelerator, logging, seed, resume point, resolved config beside the outputs.
    t = cfg.train
    run = loop.start("sft", cfg, t.gradient_accumulation_steps)
    accelerator, log = run.accelerator, run.log
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Data: tokenized with loss masks; optionally packed.
    tokenizer = models.load_tokenizer(cfg.model)
    train_set, eval_set = load_examples(cfg, tokenizer)
    if cfg.data.packing:
        train_set = pack(train_set, cfg.data.max_length)
    rlog.announce_builtins(log, "sft", cfg)
    log.info(f"sft: {len(train_set)} train rows, {len(eval_set)} eval rows, {world} process(es)")

    # 3. Model: base + adapter (or selected layers / everything), optimizer, schedule.
    model = adapters.apply(models.load_causal_lm(cfg.model), cfg.adapter)
    trainable, total = adapters.count_parameters(model)
    log.info(f"sft: training {trainable:,} of {total:,} parameters ({cfg.adapter.method})")
    steps = total_steps(
        len(train_set), t.epochs, t.max_steps, t.per_device_batch_size, world, t.gradient_accumulation_steps
    )
    model, optimizer, scheduler = optim.setup(accelerator, model, t, steps, t.per_device_batch_size)

    # 4. Resume: weights, optimizer, schedule and RNG from the checkpoint; data position = step.
    state = loop.resume(run)

    # 4b. Guardrail: the held-out loss before the first step, then at each evaluation (train.eval_loss_rise).
    held_out = loop.HeldOut(
        run, state, lambda: evaluate(accelerator, model, eval_set, t.per_device_batch_size, tokenizer.pad_token_id)
    )

    # 5. Train: `steps` optimizer steps of `gradient_accumulation_steps` micro-batches each.
    stream = IndexStream(len(train_set), cfg.seed)
    seen_first_epoch: list[int] = []
    model.train()
    window, grad_norm = loop.Window(), None
    for step in loop.progress(run, steps):
        for m in range(step * t.gradient_accumulation_steps, (step + 1) * t.gradient_accumulation_steps):
            indices = stream.batch(m, t.per_device_batch_size, rank, world)
            first = (m * world + rank) * t.per_device_batch_size  # stream position of this micro-batch
            seen_first_epoch += [i for k, i in enumerate(indices) if first + k < len(train_set)]
            batch = collate([train_set[i] for i in indices], tokenizer.pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                loss_sum, count = token_loss(model, batch)
                loss = loss_sum / count.clamp(min=1)
                grad_norm = loop.optimizer_step(accelerator, model, optimizer, scheduler, loss, t.max_grad_norm)
            window.add(loss=loss.item() / t.gradient_accumulation_steps, tokens=real_tokens(batch))
        window.steps += 1
        done = step + 1
        if loop.due(done, t.log_steps, steps, final=True):
            totals = window.totals(accelerator)
            epoch = stream.epoch(done * t.gradient_accumulation_steps, t.per_device_batch_size, world)
            metrics = loop.train_metrics(totals["loss"] / world / window.steps, scheduler, epoch, grad_norm)
            run.tracker.log({**metrics, "train/tokens_per_second": totals["tokens"] / window.seconds}, step=done)
            run.bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            window.reset()
        if loop.due(done, t.eval_steps, steps):
            held_out(done)
        loop.save_checkpoint(run, done, steps, held_out=held_out.state_dict())
    eval_metrics = held_out(steps, final=True)

    # 6. Save: adapter (or full weights) + tokenizer, merged model, manifest.
    seen = gather_object([seen_first_epoch])
    data = {
        "train_rows": len(train_set),
        "eval_rows": len(eval_set),
        "first_epoch_seen_per_rank": [len(s) for s in seen],
        "first_epoch_overlap": len(set.intersection(*map(set, seen))) if world > 1 else 0,
    }
    save(cfg, run, model, tokenizer, eval_metrics, {"steps": steps, "data": data})
    figures = f"{steps} steps"
    if eval_metrics:
        figures += f", eval loss {eval_metrics['eval/loss']:.3f} (perplexity {eval_metrics['eval/perplexity']:.2f})"
    loop.finish(run, figures)
    return eval_metrics


def save(cfg: SFTConfig, run: loop.Run, model, tokenizer, eval_metrics: dict, extra: dict) -> None:
    """The adapter (or full weights) + tokenizer, the merged model for the next stages, and the manifest."""
    accelerator = run.accelerator
    adapters.save(accelerator, model, cfg.output_dir, tokenizer, run=cfg.run)
    if not accelerator.is_main_process:
        return
    outputs = {"adapter" if adapters.is_peft(accelerator.unwrap_model(model)) else "weights": "."}
    outputs["model"] = _save_for_next_stage(cfg, tokenizer)
    base = models.resolve_path(cfg.model.name_or_path)
    inputs = manifest.stage_inputs(base, cfg.data.path, cfg.data.eval_path, trained=True)
    metrics = {**loop.last_metrics(cfg.output_dir, ("train/",)), **eval_metrics}
    saving.write_manifest(run, inputs, outputs, metrics, extra=extra)


def ready_for_scoring(folder: str, tokenizer) -> None:
    """merged/config.json also says: one label and the pad token. A causal LM ignores both; the reward model built
    on this base has a 1-label score head read at the last non-pad token, so with them here
    `AutoPeftModelForSequenceClassification.from_pretrained(reward_folder)` rebuilds it exactly, no kwargs."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    with files.staged(folder) as tmp:
        config.save_pretrained(tmp)


def _save_for_next_stage(cfg: SFTConfig, tokenizer) -> str:
    """Where the next stages' model is: merged/ for LoRA and IA3, the run folder otherwise."""
    if cfg.adapter.method in ("lora", "ia3") and cfg.save_merged:
        merged = saving.save_merged(cfg, models.resolve_path(cfg.model.name_or_path), tokenizer)
        ready_for_scoring(os.path.join(cfg.output_dir, merged), tokenizer)
        return merged
    return "."
