"""The config pieces every stage composes (model, adapter, training, checkpoints, tracking, hub) and the checks a
config declares: allowed ranges per field (`RANGES`) and required keys (`require`).

Each stage's own dataclass lives beside the stage (alignment/sft.py, reward/train.py, alignment/ppo/config.py, ...).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from alignment.common.errors import ConfigError

# ----------------------------------------------------------------------------------------------
# Ranges, declared per config class: `RANGES: ClassVar = {"learning_rate": "> 0", "warmup_ratio": "[0, 1]"}`.
# `load_config` checks every (nested) config's RANGES when it loads, before any stage code runs, so a zero
# batch size or a negative learning rate is one line naming the key instead of a torch error an hour in.
# A spec is `> a`, `>= a`, `< a`, `<= a`, or an interval `[a, b]`, `(a, b]`, `[a, b)`, `(a, b)`; None passes.

_INTERVAL = re.compile(r"^([\[(])\s*(-?[\d.e+-]+)\s*,\s*(-?[\d.e+-]+)\s*([\])])$")
_BOUND = re.compile(r"^(>=|<=|>|<)\s*(-?[\d.e+-]+)$")


def in_range(value: Any, spec: str) -> bool:
    """Whether `value` (a finite number) satisfies `spec` (see above)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    m = _INTERVAL.match(spec.strip())
    if m:
        lo, hi = float(m.group(2)), float(m.group(3))
        return (value >= lo if m.group(1) == "[" else value > lo) and (value <= hi if m.group(4) == "]" else value < hi)
    m = _BOUND.match(spec.strip())
    if not m:
        raise ValueError(f"bad range spec {spec!r}")
    op, bound = m.group(1), float(m.group(2))
    return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


def check_range(key: str, value: Any, spec: str) -> None:
    """ConfigError naming `key` unless `value` is None or satisfies `spec`."""
    if value is not None and not in_range(value, spec):
        want = f"in {spec}" if spec[0] in "[(" else spec
        raise ConfigError(f"'{key}' must be {want}, got {value!r}", key=key)


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Check the RANGES of `cfg` and of every nested config dataclass in it."""
    for name, spec in getattr(type(cfg), "RANGES", {}).items():
        check_range(prefix + name, getattr(cfg, name), spec)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")


# ----------------------------------------------------------------------------------------------
# Shared sub-configs. Stages compose these; each stage's own dataclass lives beside the stage
# (alignment/sft.py, reward/train.py, alignment/ppo/config.py, reward/rankings/config.py).


@dataclass
class ModelConfig:
    name_or_path: str = ""
    """Hub id, local folder, a previous stage's run folder, or `builtin:tiny-llama` (a small Llama built offline
    and cached; only when named)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder; defaults to the model's."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype: `auto` is bfloat16 on a GPU that supports it, float32 on CPU."""
    attn_implementation: str | None = None
    """`sdpa`, `eager` or `flash_attention_2`; None lets transformers choose."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    trust_remote_code: bool = False
    """Allow model code from the hub repository."""
    revision: str | None = None
    """Hub revision (branch, tag or commit)."""
    chat_template: str | None = None
    """Jinja chat template (text or a file path) for tokenizers that have none."""


@dataclass
class AdapterConfig:
    RANGES: ClassVar = {"r": ">= 1", "alpha": "> 0", "dropout": "[0, 1)", "num_virtual_tokens": ">= 1"}
    """Allowed values (`alignment.config.check_ranges`), checked when the config loads."""

    method: Literal["lora", "prompt_tuning", "ia3", "selective", "full"] = "lora"
    """What is trained: a LoRA/prompt-tuning/IA3 adapter, named layers only (`selective`), or everything."""
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha (scale = alpha / r)."""
    dropout: float = 0.0
    """LoRA dropout."""
    target_modules: list[str] | str = "all-linear"
    """Modules LoRA/IA3 wrap: a list of names or `all-linear`."""
    num_virtual_tokens: int = 16
    """Prompt tuning: number of virtual tokens."""
    trainable: list[str] = field(default_factory=list)
    """Selective fine-tuning: parameter-name substrings that stay trainable (e.g. `layers.1.`, `lm_head`)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained in full and saved with the adapter (e.g. `score`)."""


@dataclass
class TrainConfig:
    RANGES: ClassVar = {
        "learning_rate": "> 0",
        "weight_decay": ">= 0",
        "adam_eps": "> 0",
        "warmup_ratio": "[0, 1]",
        "per_device_batch_size": ">= 1",
        "gradient_accumulation_steps": ">= 1",
        "epochs": "> 0",
        "max_steps": ">= -1",
        "max_grad_norm": ">= 0",
        "log_steps": ">= 0",
        "eval_steps": ">= 0",
        "eval_loss_rise": ">= 0",
    }
    """Allowed values (`alignment.config.check_ranges`), checked when the config loads."""

    learning_rate: float = 2e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    """Decay after warmup."""
    warmup_ratio: float = 0.0
    """Fraction of the optimizer steps spent warming up linearly."""
    per_device_batch_size: int = 8
    """Micro-batch size on each process."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    epochs: float = 1.0
    """Passes over the data (fractions allowed); ignored when max_steps > 0."""
    max_steps: int = -1
    """Optimizer steps to run; -1 derives it from epochs."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    log_steps: int = 10
    """Log metrics every this many optimizer steps."""
    eval_steps: int = 0
    """Evaluate every this many optimizer steps (0: only at the end); SFT, the reward model and DPO also evaluate once
    before the first step, where their held-out loss starts."""
    eval_loss_rise: float = 0.02
    """Warn when the held-out loss rises this many nats above its lowest evaluation of the run, the start included
    (overfitting: the model learns its training rows at the held-out rows' cost); 0: no warning."""


@dataclass
class CheckpointConfig:
    RANGES: ClassVar = {"save_steps": ">= 0", "keep_last": ">= 0"}
    """Allowed values (`alignment.config.check_ranges`), checked when the config loads."""

    save_steps: int = 0
    """Write a resumable checkpoint every this many optimizer steps (0: none)."""
    keep_last: int = 2
    """How many checkpoints to keep; older ones are deleted."""
    resume: str | None = None
    """`auto` (latest checkpoint in output_dir, if any) or a checkpoint folder to resume from."""


@dataclass
class TrackingConfig:
    wandb: bool = False
    """Log to Weights & Biases (metrics.jsonl in output_dir is always written)."""
    project: str = "rlhf"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user)."""
    run_name: str | None = None
    """W&B run name; defaults to the output folder's name."""
    mode: Literal["online", "offline"] | None = None
    """W&B mode; None follows WANDB_MODE."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""


@dataclass
class HubOptions:
    """Fields every training stage's config inherits: publish the output folder to the Hugging Face Hub."""

    push_to_hub: bool = False
    """Upload the trained model when the stage finishes: the adapter (base on the hub) or, for a base that exists
    only here, the merged standalone model; with tokenizer, model card, config and manifest."""
    hub_model_id: str | None = None
    """Hub repository `org/name` to push to (required with push_to_hub)."""
    hub_private: bool = True
    """Create the repository as private."""

    def validate_hub(self) -> None:
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("'hub_model_id' is required with push_to_hub=true (e.g. my-org/my-model)", "push_to_hub")
        if self.hub_model_id and self.hub_model_id.count("/") > 1:
            raise ConfigError(f"'hub_model_id' must be name or org/name, got '{self.hub_model_id}'", "hub_model_id")


def require(cfg: Any, *keys: str) -> None:
    """Raise ConfigError naming the first dotted key whose value is empty (and `run=` when it would set it)."""
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value in ("", None, {}):
            also = ", or run=RUN_FOLDER to chain stages" if key in getattr(type(cfg), "RUN_PATHS", {}) else ""
            raise ConfigError(f"missing required value '{key}' (set it in the YAML or as {key}=...{also})", key=key)
