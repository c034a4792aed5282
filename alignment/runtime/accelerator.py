"""The Accelerator every stage uses: plain python, DDP, ZeRO-2/3, CPU or GPU, unchanged.

Under `accelerate launch --use_deepspeed` on machines without a GPU, Accelerate's own state
believes there is one process (every rank is "main"), so sharding, gathers and main-only saving go
wrong. Creating the process group with the gloo backend before the Accelerator fixes that.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from alignment.runtime import logging as rlog


def using_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(gradient_accumulation_steps: int = 1, log_with: str | None = None):
    from accelerate import Accelerator
    from accelerate.state import PartialState

    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if using_deepspeed():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            skip_shared_memory_kernel()
            PartialState(backend="gloo")
        else:
            # `--multi_gpu` on a machine without GPUs otherwise starts N independent
            # single-process runs that overwrite each other's output folder.
            os.environ["ACCELERATE_USE_CPU"] = "true"
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps, log_with=log_with)


def skip_shared_memory_kernel() -> None:
    """DeepSpeed on CPU compiles its shared-memory all-reduce kernel (g++, about 30 s on 2 cores, once per machine,
    and a hang on CPUs without AVX2) when its process group starts. Only its inference all-reduce uses it; training
    reduces through torch.distributed (gloo here). Marking the kernel unavailable in this process skips the build."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


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


def set_deepspeed_clipping(accelerator, max_grad_norm: float) -> None:
    """Give DeepSpeed the stage's clipping norm (0: none): it clips inside its own step, where Accelerate's
    `clip_grad_norm_` cannot, and would otherwise turn the JSON's `"gradient_clipping": "auto"` into 1.0."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    given = config.get("gradient_clipping", "auto")
    if given != "auto" and float(given) != float(max_grad_norm):
        rlog.get().warning(
            f"DeepSpeed config sets gradient_clipping={given}; the stage's train.max_grad_norm={max_grad_norm} is used"
        )
    config["gradient_clipping"] = float(max_grad_norm)


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
