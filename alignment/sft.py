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
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from alignment.cli import parse_stage_args
from alignment.config import (
    AdapterConfig,
    CheckpointConfig,
    ModelConfig,
    TrackingConfig,
    TrainConfig,
    require,
    to_dict,
)
from alignment.runtime import adapters, checkpoint, manifest, models, optim
from alignment.runtime.accelerator import finish, start_stage
from alignment.runtime.data import load_rows
from alignment.runtime.formatting import IGNORE, collate, encode_sft, pack
from alignment.runtime.sampler import IndexStream, eval_batches, total_steps
from alignment.runtime.tracking import Tracker, new_run_id, read_metrics

# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class SFTDataConfig:
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
class SFTConfig:
    output_dir: str = ""
    """Run folder: adapter, tokenizer, merged model, checkpoints, metrics.jsonl, manifest.json."""
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
        require(self, "output_dir", "data.path")


# ----------------------------------------------------------------------------------------------
# The stage


def main(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf sft", SFTConfig, argv, __doc__)
    if cfg is not None:
        train(cfg)
    return 0


def load_examples(cfg: SFTConfig, tokenizer) -> tuple[list[dict], list[dict]]:
    """Tokenized train and eval examples; eval held out by a seeded split when no eval_path is set."""
    d = cfg.data
    rows = load_rows(d.path, d.split, d.limit)
    where = d.path if not d.path.startswith("builtin:") else d.path
    encoded = [
        encode_sft(tokenizer, r, d.max_length, d.completion_only_loss, f"{where}:{i + 1}") for i, r in enumerate(rows)
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
    accelerator, log, resume_from = start_stage(cfg, t.gradient_accumulation_steps)
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Data: tokenized with loss masks; optionally packed.
    tokenizer = models.load_tokenizer(cfg.model)
    train_set, eval_set = load_examples(cfg, tokenizer)
    if cfg.data.packing:
        train_set = pack(train_set, cfg.data.max_length)
    log.info(f"sft: {len(train_set)} train rows, {len(eval_set)} eval rows, {world} process(es)")

    # 3. Model: base + adapter (or selected layers / everything), optimizer, schedule.
    model = models.load_causal_lm(cfg.model)
    model = adapters.apply(model, cfg.adapter)
    if cfg.model.gradient_checkpointing and adapters.is_peft(model):
        model.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input
    trainable, total = adapters.count_parameters(model)
    log.info(f"sft: training {trainable:,} of {total:,} parameters ({cfg.adapter.method})")
    steps = total_steps(
        len(train_set), t.epochs, t.max_steps, t.per_device_batch_size, world, t.gradient_accumulation_steps
    )
    optimizer, scheduler = optim.build(model, t, steps)
    model, optimizer = optim.prepare(accelerator, model, optimizer, scheduler, t.per_device_batch_size)

    # 4. Resume: weights, optimizer, schedule and RNG from the checkpoint; data position = step.
    start, run_id = 0, new_run_id()
    if resume_from:
        state = checkpoint.load(accelerator, resume_from)
        start, run_id = state["step"], state["run_id"]
        log.info(f"sft: resumed from {resume_from} at step {start}")
    tracker = Tracker(accelerator, cfg.tracking, cfg.output_dir, to_dict(cfg), run_id, step=start)

    # 5. Train: `steps` optimizer steps of `gradient_accumulation_steps` micro-batches each.
    stream = IndexStream(len(train_set), cfg.seed)
    seen_first_epoch: list[int] = []
    model.train()
    bar = tqdm(total=steps, initial=start, desc="sft", disable=not accelerator.is_main_process, dynamic_ncols=True)
    window = {"loss": 0.0, "tokens": 0, "time": time.time(), "steps": 0}
    grad_norm = None
    loop_start = time.time()
    for step in range(start, steps):
        for micro in range(t.gradient_accumulation_steps):
            m = step * t.gradient_accumulation_steps + micro
            indices = stream.batch(m, t.per_device_batch_size, rank, world)
            seen_first_epoch += [
                i for k, i in enumerate(indices) if (m * world + rank) * t.per_device_batch_size + k < len(train_set)
            ]
            batch = collate([train_set[i] for i in indices], tokenizer.pad_token_id)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                loss_sum, count = token_loss(model, batch)
                loss = loss_sum / count.clamp(min=1)
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            window["loss"] += loss.item() / t.gradient_accumulation_steps
            window["tokens"] += int(
                batch["input_ids"].numel() if "attention_mask" not in batch else batch["attention_mask"].sum()
            )
        window["steps"] += 1
        done = step + 1
        bar.update(1)
        if done % t.log_steps == 0 or done == steps:
            elapsed = max(time.time() - window["time"], 1e-9)
            metrics = {
                "train/loss": window["loss"] / window["steps"],
                "train/learning_rate": scheduler.get_last_lr()[0],
                "train/epoch": stream.epoch(done * t.gradient_accumulation_steps, t.per_device_batch_size, world),
                "train/tokens_per_second": window["tokens"] * world / elapsed,
            }
            if t.max_grad_norm > 0 and grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            tracker.log(metrics, step=done)
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            window = {"loss": 0.0, "tokens": 0, "time": time.time(), "steps": 0}
        if t.eval_steps and done % t.eval_steps == 0 and done < steps:
            tracker.log(evaluate(accelerator, model, eval_set, t.per_device_batch_size, tokenizer.pad_token_id), done)
        if cfg.checkpoint.save_steps and done % cfg.checkpoint.save_steps == 0 and done < steps:
            checkpoint.save(accelerator, cfg.output_dir, done, {"run_id": run_id}, cfg.checkpoint.keep_last)
    bar.close()
    train_seconds = time.time() - loop_start
    eval_metrics = evaluate(accelerator, model, eval_set, t.per_device_batch_size, tokenizer.pad_token_id)
    if eval_metrics:
        tracker.log(eval_metrics, step=steps)
        log.info(f"sft: eval loss {eval_metrics['eval/loss']:.4f}, perplexity {eval_metrics['eval/perplexity']:.2f}")

    # 6. Save: adapter (or full weights) + tokenizer, merged model, manifest.
    from accelerate.utils import gather_object

    seen = gather_object([seen_first_epoch])
    adapters.save(accelerator, model, cfg.output_dir, tokenizer)
    outputs = {"adapter" if adapters.is_peft(accelerator.unwrap_model(model)) else "weights": "."}
    if accelerator.is_main_process:
        outputs["model"] = _save_for_next_stage(cfg, accelerator.unwrap_model(model), tokenizer)
        final = tracker_last(cfg.output_dir)
        manifest.write(
            cfg.output_dir,
            "sft",
            inputs={"model": cfg.model.name_or_path, "data": cfg.data.path},
            outputs=outputs,
            metrics={**final, **eval_metrics},
            extra={
                "steps": steps,
                "train_seconds": train_seconds,
                "world_size": world,
                "data": {
                    "train_rows": len(train_set),
                    "eval_rows": len(eval_set),
                    "first_epoch_seen_per_rank": [len(s) for s in seen],
                    "first_epoch_overlap": len(set.intersection(*map(set, seen))) if world > 1 else 0,
                },
            },
        )
        log.info(f"sft: wrote {cfg.output_dir}")
    finish(accelerator)
    return eval_metrics


def _save_for_next_stage(cfg: SFTConfig, unwrapped, tokenizer) -> str:
    """Where the next stages' model is: merged/ for LoRA and IA3, the run folder otherwise."""
    if cfg.adapter.method in ("lora", "ia3") and cfg.save_merged:
        base = models.resolve_path(cfg.model.name_or_path)
        adapters.merge_to(
            cfg.output_dir,
            base,
            os.path.join(cfg.output_dir, "merged"),
            models.resolve_dtype(cfg.model.dtype),
            tokenizer,
        )
        return "merged"
    return "."


def tracker_last(output_dir: str) -> dict:
    """The last logged value of each training metric."""

    last: dict = {}
    for row in read_metrics(output_dir):
        last.update({k: v for k, v in row.items() if k.startswith("train/")})
    return last
