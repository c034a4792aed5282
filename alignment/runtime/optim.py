"""AdamW + warmup/decay schedule over the trainable parameters, shared by every stage."""

from __future__ import annotations

import math

import torch

from alignment.config import TrainConfig
from alignment.runtime.accelerator import set_deepspeed_batch


def build(model, cfg: TrainConfig, total_steps: int, lr: float | None = None):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr or cfg.learning_rate, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.lr_scheduler]
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


def prepare(accelerator, model, optimizer, scheduler, micro_batch_size: int):
    """Wrap model and optimizer for DDP/DeepSpeed; the scheduler stays ours.

    The scheduler is not prepared: Accelerate would step it once per process per optimizer step
    (it assumes a sharded dataloader, which we do not use), so on 2 ranks a schedule would end
    halfway through training. Stages step it by hand on sync steps; it is registered so
    checkpoints still carry it.
    """

    set_deepspeed_batch(accelerator, micro_batch_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return model, optimizer
