"""What is trained: LoRA (default), prompt tuning, IA3, selected layers, or the whole model.

Adapters are saved the PEFT way (`PeftModel.from_pretrained(base, folder)` loads them), and can be
merged into a standalone model for the next stage.
"""

from __future__ import annotations

from alignment.common import files
from alignment.common.errors import UserError
from alignment.config.shared import AdapterConfig
from alignment.runtime.accelerator import local_loading
from alignment.runtime.models import portable_base


def apply(model, cfg: AdapterConfig, task_type: str = "CAUSAL_LM"):
    """Wrap or freeze `model` according to `cfg.method`; returns the model to train."""
    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    if cfg.method == "selective":
        if not cfg.trainable:
            raise UserError("adapter.trainable: list the parameter-name substrings to train for method=selective")
        matched = 0
        for name, param in model.named_parameters():
            param.requires_grad_(any(pattern in name for pattern in cfg.trainable))
            matched += param.requires_grad
        if not matched:
            raise UserError(f"adapter.trainable: no parameter name contains any of {cfg.trainable}")
        return model
    from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model

    if cfg.method == "lora":
        peft_cfg = LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=cfg.target_modules,
            modules_to_save=cfg.modules_to_save or None,
            task_type=task_type,
        )
    elif cfg.method == "ia3":
        # PEFT knows IA3's attention/feed-forward targets for common architectures; `all-linear`
        # means "use those defaults" here since IA3 needs the feed-forward subset named too.
        targets = None if cfg.target_modules == "all-linear" else cfg.target_modules
        peft_cfg = IA3Config(target_modules=targets, modules_to_save=cfg.modules_to_save or None, task_type=task_type)
    else:
        peft_cfg = PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type=task_type)
    try:
        wrapped = get_peft_model(model, peft_cfg)
    except ValueError as e:
        raise UserError(f"adapter: {cfg.method} does not fit this model ({str(e).splitlines()[0]})") from None
    if getattr(model, "is_gradient_checkpointing", False):
        wrapped.enable_input_require_grads()  # checkpointed blocks on a frozen base need a grad-requiring input
    return wrapped


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; under ZeRO-3 uses the full (not partitioned) sizes."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def save(accelerator, model, folder: str, tokenizer=None, run: str | None = None) -> None:
    """Save what was trained (adapter or full weights) from a prepared model, gathering ZeRO-3 shards; an adapter's
    base is recorded so the run folder `run` can move (`models.portable_base`)."""
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3: every rank calls it
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        with files.staged(folder) as tmp:  # a full disk leaves the files of before, not half an adapter
            unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            portable_base(tmp, run, run_folder=folder)  # a base in the run folder is recorded as sft/merged
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()


def merge_to(adapter_folder: str, base_path: str, out_folder: str, dtype, tokenizer=None, auto_class=None) -> None:
    """Load base + saved adapter fresh on CPU, merge, and save a standalone model (main process only).

    Loading from disk (instead of merging the live model) works the same under ZeRO-3, where the
    live weights are partitioned across ranks.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    auto_class = auto_class or AutoModelForCausalLM
    with local_loading():
        base = auto_class.from_pretrained(base_path, dtype=dtype)
        merged = PeftModel.from_pretrained(base, adapter_folder).merge_and_unload()
    with files.staged(out_folder) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
