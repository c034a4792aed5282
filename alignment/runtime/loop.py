"""The training loop every stage shares, as free functions: start and resume, one optimizer step, the
log / eval / checkpoint triggers, metric windows and the last metrics for the manifest.

A stage keeps its own `train()`, read top to bottom in numbered steps; these are the mechanics it
calls (no base class, TRL's and torchtune's way):

    run = loop.start("sft", cfg, t.gradient_accumulation_steps)   # accelerator, log, seed, resume point
    ... data, model ...
    model, optimizer, scheduler = optim.setup(run.accelerator, model, t, steps, t.per_device_batch_size)
    loop.resume(run)                                 # checkpoint -> run.step; opens run.tracker
    for step in loop.progress(run, steps):
        for micro in range(t.gradient_accumulation_steps):
            with run.accelerator.accumulate(model):
                loss = ...
                grad_norm = loop.optimizer_step(run.accelerator, model, optimizer, scheduler, loss, t.max_grad_norm)
        if loop.due(step + 1, t.log_steps, steps, final=True):
            run.tracker.log({...}, step=step + 1)
        loop.save_checkpoint(run, step + 1, steps)
    ... save outputs, manifest with loop.last_metrics(...) ...
    loop.finish(run)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from alignment.common import manifest
from alignment.config.loader import check_output_dir, save_config, to_dict
from alignment.runtime import accelerator as acc
from alignment.runtime import checkpoint, health
from alignment.runtime import logging as rlog
from alignment.runtime.tracking import Tracker, new_run_id, read_metrics


@dataclass
class Run:
    """One training stage's run: what the loop helpers share. Built by `start`, completed by `resume`."""

    name: str
    """The stage, as it prefixes log lines and names the progress bar (`sft`, `reward`, `ppo`)."""
    cfg: Any
    """The stage config: output_dir, seed, checkpoint and tracking sections are read here."""
    accelerator: Any
    log: logging.Logger
    resume_from: str | None
    """The checkpoint `resume` restores (None: a fresh run)."""
    step: int = 0
    """The first step the loop runs: 0, or the checkpoint's step after `resume`."""
    run_id: str = ""
    """W&B run id; a resumed run keeps the interrupted run's."""
    tracker: Tracker | None = None
    """metrics.jsonl + W&B, opened by `resume`."""
    bar: Any = None
    """The progress bar while `progress` runs (for `bar.set_postfix`)."""
    train_seconds: float = 0.0
    """Wall time of the loop, set when `progress` ends."""
    started: float = field(default_factory=time.time)
    """When the stage began (`start`), for the summary line `finish` prints."""


def start(name: str, cfg, gradient_accumulation_steps: int) -> Run:
    """How every training stage begins: the Accelerator (DDP, ZeRO-2/3, CPU fixes), logging, the same seed on
    every process (identical adapter init) and the checkpoint to resume from. Nothing is written yet: the
    resolved config goes beside the outputs in `resume`, once data and model have loaded, so a run that fails
    on its inputs leaves output_dir as it was."""
    from accelerate.utils import set_seed

    check_output_dir(cfg.output_dir)
    if getattr(cfg, "push_to_hub", False):  # before anything loads or trains: a run must not end in a failed push
        from alignment.runtime import hub

        hub.preflight(cfg.hub_model_id)
    accelerator = acc.make_accelerator(gradient_accumulation_steps, log_with="wandb" if cfg.tracking.wandb else None)
    log = rlog.setup(accelerator.is_main_process)
    set_seed(cfg.seed)
    resume_from = checkpoint.resolve_resume(cfg.checkpoint.resume, cfg.output_dir)
    return Run(name, cfg, accelerator, log, resume_from)


def resume(run: Run) -> dict:
    """Restore the checkpoint chosen by `start` into the prepared model, optimizer and schedule, then open tracking.

    Weights, optimizer, schedule and every rank's RNG come back through Accelerate; `run.step` and the W&B
    run id from the trainer state. Returns the rest of that state (the stage's own extras, e.g. PPO's KL
    controller), {} on a fresh start. Call it after `optim.setup`, before the first step.
    """
    state: dict = {}
    cfg = run.cfg
    if run.accelerator.is_main_process:  # the first write to output_dir: every input has loaded by now
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    run.run_id = new_run_id()
    if run.resume_from:
        state = checkpoint.load(run.accelerator, run.resume_from)
        run.step, run.run_id = state.pop("step"), state.pop("run_id")
        run.log.info(f"{run.name}: resumed from {run.resume_from} at step {run.step}")
    run.tracker = Tracker(run.accelerator, cfg.tracking, cfg.output_dir, to_dict(cfg), run.run_id, step=run.step)
    return state


def progress(run: Run, total: int) -> Iterator[int]:
    """Steps `run.step` .. `total - 1` (0-based) under a progress bar on the main process; times the loop."""
    run.bar = tqdm(
        total=total, initial=run.step, desc=run.name, disable=not run.accelerator.is_main_process, dynamic_ncols=True
    )
    started = time.time()
    try:
        for step in range(run.step, total):
            yield step
            run.bar.update(1)
    finally:
        run.bar.close()
        run.train_seconds = time.time() - started


def optimizer_step(accelerator, model, optimizer, scheduler, loss: torch.Tensor, max_grad_norm: float) -> float | None:
    """Backward of one micro-batch's loss, and the optimizer step when this micro-batch completes an accumulation.

    Call it inside `accelerator.accumulate(model)`, around the forward that made `loss` (DDP skips the
    gradient all-reduce of the other micro-batches there). On the sync step: clip the gradient to
    `max_grad_norm` (0: no clipping, the norm is still measured; DeepSpeed clips inside its own step with
    the norm `optim.prepare` gave it), step the optimizer, then the schedule; gradients are zeroed after.
    Returns the gradient norm before clipping on sync steps, None on the others.
    """
    accelerator.backward(loss)
    grad_norm = None
    if accelerator.sync_gradients:
        # an infinite max norm scales every gradient by exactly 1.0: measured, not clipped
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else math.inf)
    optimizer.step()
    if accelerator.sync_gradients:
        scheduler.step()
    optimizer.zero_grad()
    return None if grad_norm is None else float(grad_norm)


def due(done: int, every: int, total: int, final: bool = False) -> bool:
    """Whether step `done` (1-based) of `total` triggers an action taken every `every` steps (0: never).

    At the last step only when `final` (logging); evaluation and checkpoints leave the last step to the
    stage's own final pass.
    """
    if done >= total:
        return final
    return every > 0 and done % every == 0


def save_checkpoint(run: Run, done: int, total: int, **state) -> bool:
    """A resumable checkpoint after step `done` when `checkpoint.save_steps` says so (every process calls this).

    Written atomically: Accelerate's state plus {step, run_id, **state}; `state` holds what the stage
    needs back beyond model, optimizer, schedule and RNG (JSON values).
    """
    c = run.cfg.checkpoint
    if not due(done, c.save_steps, total):
        return False
    checkpoint.save(run.accelerator, run.cfg.output_dir, done, {"run_id": run.run_id, **state}, c.keep_last)
    return True


class HeldOut:
    """A stage's held-out evaluations (`evaluate`: its metrics, {} without held-out data), each logged and watched by
    the held-out-loss guardrail (`train.eval_loss_rise`). On a fresh start the untrained model is evaluated first,
    logged at step 0, so a model that ends worse on held-out rows than it started is caught even without
    evaluations during training; on a resume the watch comes back from the checkpoint `state`."""

    def __init__(self, run: Run, state: dict, evaluate: Callable[[], dict]):
        self.run, self.evaluate = run, evaluate
        speaks = run.accelerator.is_main_process
        self.watch = health.HeldOutWatch(run.name, run.cfg.train.eval_loss_rise, run.log, speaks)
        if "held_out" in state:
            self.watch.load_state_dict(state["held_out"])
        elif run.step == 0:
            self(0)

    def __call__(self, step: int, final: bool = False, extra: dict | None = None) -> dict:
        """Evaluate, log (with `extra`, e.g. DPO's sample health) and watch at `step`; the metrics."""
        metrics = self.evaluate()
        if metrics or extra:
            self.run.tracker.log({**metrics, **(extra or {})}, step=step)
        self.watch.check(metrics, step, final)
        return metrics

    def state_dict(self) -> dict:
        return self.watch.state_dict()


def reduce_metrics(accelerator, values: dict[str, float], reduction: str = "mean") -> dict[str, float]:
    """`values` (the same names on every process) summed or averaged over processes, in float64; every process
    must call it."""
    names = list(values)
    local = torch.tensor([float(values[k]) for k in names], dtype=torch.float64, device=accelerator.device)
    return dict(zip(names, accelerator.reduce(local, reduction=reduction).cpu().tolist()))


class Window:
    """Sums of per-micro-batch values between two logs, with the optimizer steps and seconds they took."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.started = time.time()

    def add(self, **values: float) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)

    def totals(self, accelerator) -> dict[str, float]:
        """The sums over every process (a collective: every process calls it at the same step)."""
        return reduce_metrics(accelerator, self.sums, reduction="sum")

    @property
    def seconds(self) -> float:
        return max(time.time() - self.started, 1e-9)


def train_metrics(loss: float, scheduler, epoch: float, grad_norm: float | None) -> dict:
    """The metrics every gradient-trained stage logs under TRL's names: train/loss, train/learning_rate,
    train/epoch and, when measured, train/grad_norm (before clipping, of the last optimizer step)."""
    metrics = {"train/loss": loss, "train/learning_rate": scheduler.get_last_lr()[0], "train/epoch": epoch}
    if grad_norm is not None:
        metrics["train/grad_norm"] = grad_norm
    return metrics


def last_metrics(output_dir: str, prefixes: tuple[str, ...] = ()) -> dict:
    """The last logged value of each metric in metrics.jsonl (names starting with one of `prefixes`, if given)."""
    last: dict = {}
    for row in read_metrics(output_dir):
        last.update({k: v for k, v in row.items() if k != "step" and (not prefixes or k.startswith(prefixes))})
    return last


def peak_memory_gb(device=None, reset: bool = True) -> float:
    """This process's peak memory in GB (1e9 bytes): allocated tensors on a CUDA device (then reset, so each
    call reports the peak since the last one), else the peak resident set size of the whole process so far
    (getrusage; the OS keeps no resettable peak)."""
    if device is not None and torch.device(device).type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return peak / 1e9
    return manifest.peak_rss_gb()


def memory_metrics(accelerator) -> dict[str, float]:
    """`memory/peak_gb`: the largest `peak_memory_gb` over processes (a collective: every process calls it)."""
    local = torch.tensor([peak_memory_gb(accelerator.device)], dtype=torch.float64, device=accelerator.device)
    return {"memory/peak_gb": float(accelerator.gather(local).max())}


def finish(run: Run, summary: str = "") -> None:
    """Publish the outputs when `push_to_hub` says so (main process), end tracking and tear down the process group
    cleanly (every process calls it), then the stage's one closing line: its time, `summary` (the figures that
    matter) and where it wrote."""
    pushed = ""
    try:
        if run.accelerator.is_main_process and getattr(run.cfg, "push_to_hub", False):
            from alignment.runtime import hub

            url = hub.push_or_explain(run.cfg.output_dir, run.cfg.hub_model_id, private=run.cfg.hub_private)
            pushed = f", pushed to {url}"
    finally:
        acc.finish(run.accelerator)
    run.log.info(summary_line(run.name, time.time() - run.started, summary, run.cfg.output_dir + pushed))


def summary_line(stage: str, seconds: float, figures: str, wrote: str) -> str:
    """`ppo: done in 34 s; score 1.60, KL 2.98 nats; wrote runs/x/ppo`: how every stage ends."""
    took = f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{stage}: done in {took}" + (f"; {figures}" if figures else "") + f"; wrote {wrote}"
