"""AdamW + warmup/decay schedule over the trainable parameters, and their DDP/DeepSpeed wrapping, for every stage."""

from __future__ import annotations

import math

import torch

from alignment.config.shared import TrainConfig
from alignment.runtime.accelerator import set_deepspeed_batch, set_deepspeed_clipping


def lr_for_beta(learning_rate: float, beta: float, pivot: float | None) -> float:
    """`learning_rate`, times pivot / beta where beta (PPO's KL coefficient, DPO's beta) is above `pivot`.

    A larger beta holds the optimum nearer the reference, so a fixed step overshoots it. Below the pivot the rate
    stays as configured: a larger step there adds noise faster than it covers the longer way (DPO's K-wise loss on
    sampled orders: docs/worlds.md). pivot None: learning_rate whatever beta."""
    if pivot is None or beta <= pivot:
        return learning_rate
    return learning_rate * pivot / beta


def build(model, cfg: TrainConfig, total_steps: int):
    """AdamW over the parameters that require grad, and the warmup + decay schedule over `total_steps`."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.lr_scheduler]
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


def setup(accelerator, model, cfg: TrainConfig, total_steps: int, micro_batch_size: int):
    """(model, optimizer, scheduler) ready to train: AdamW and the schedule over the trainable parameters,
    wrapped for DDP/DeepSpeed with the stage's clipping norm (`cfg.max_grad_norm`)."""
    optimizer, scheduler = build(model, cfg, total_steps)
    model, optimizer = prepare(accelerator, model, optimizer, scheduler, micro_batch_size, cfg.max_grad_norm)
    return model, optimizer, scheduler


def prepare(accelerator, model, optimizer, scheduler, micro_batch_size: int, max_grad_norm: float):
    """Wrap model and optimizer for DDP/DeepSpeed; the scheduler stays ours.

    Clipping honours `max_grad_norm` (0: none) everywhere: `loop.optimizer_step` clips under DDP and on
    one process, and DeepSpeed, which clips inside its own step, is given the same norm here.

    The scheduler is not prepared: Accelerate would step it once per process per optimizer step
    (it assumes a sharded dataloader, which we do not use), so on 2 ranks a schedule would end
    halfway through training. Stages step it by hand on sync steps; it is registered so
    checkpoints still carry it.
    """

    set_deepspeed_batch(accelerator, micro_batch_size)
    set_deepspeed_clipping(accelerator, max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return model, optimizer
