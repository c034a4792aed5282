"""The Accelerator every stage uses: plain python, DDP, ZeRO-2/3, CPU or GPU, unchanged.

Under `accelerate launch --use_deepspeed` on machines without a GPU, Accelerate's own state
believes there is one process (every rank is "main"), so sharding, gathers and main-only saving go
wrong. Creating the process group with the gloo backend before the Accelerator fixes that.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from alignment.config import save_config
from alignment.runtime import checkpoint
from alignment.runtime import logging as rlog


def using_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(gradient_accumulation_steps: int = 1, log_with: str | None = None, project_dir: str | None = None):
    from accelerate import Accelerator
    from accelerate.state import PartialState

    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if using_deepspeed():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            PartialState(backend="gloo")
        else:
            # `--multi_gpu` on a machine without GPUs otherwise starts N independent
            # single-process runs that overwrite each other's output folder.
            os.environ["ACCELERATE_USE_CPU"] = "true"
    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_dir=project_dir,
    )
    return accelerator


def set_deepspeed_batch(accelerator, micro_batch_size: int) -> None:
    """Fill DeepSpeed's `auto` batch sizes: we shard data ourselves and prepare no dataloader."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    ga = accelerator.gradient_accumulation_steps
    config["gradient_accumulation_steps"] = ga
    config["train_batch_size"] = micro_batch_size * ga * accelerator.num_processes


def zero_stage(accelerator) -> int:
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


@contextmanager
def local_loading():
    """Load models on one rank alone while DeepSpeed ZeRO-3 is active.

    Accelerate registers its DeepSpeed config with transformers (even with zero3_init_flag off), and
    `from_pretrained` then partitions new models with a collective `zero.Init`: called on the main
    process only, that waits forever for the other ranks. Unregister it for the duration.
    """
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


def finish(accelerator) -> None:
    """End trackers and tear down the process group cleanly (a rank may abort at exit otherwise)."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def start_stage(cfg, gradient_accumulation_steps: int):
    """How every training stage begins: (accelerator, logger, checkpoint to resume from or None).

    The same seed on every process (identical adapter init), W&B when `cfg.tracking.wandb`, and the
    resolved config written beside the outputs by the main process.
    """
    from accelerate.utils import set_seed

    accelerator = make_accelerator(gradient_accumulation_steps, log_with="wandb" if cfg.tracking.wandb else None)
    log = rlog.setup(accelerator.is_main_process)
    set_seed(cfg.seed)
    resume_from = checkpoint.resolve_resume(cfg.checkpoint.resume, cfg.output_dir)
    if accelerator.is_main_process:
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    return accelerator, log, resume_from
