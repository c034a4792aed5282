"""Model and tokenizer loading: hub ids, local folders, `builtin:` models, and adapter folders."""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from alignment.common import files
from alignment.common.errors import UserError
from alignment.config.shared import ModelConfig
from alignment.runtime import tiny

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_path(name: str, key: str = "model.name_or_path") -> str:
    """A builtin name becomes its cached folder; a local path must exist; anything else is a hub id."""
    path = os.path.expanduser(tiny.resolve(name))
    if os.path.exists(path):
        return path
    # A hub id is `name` or `org/name`; anything else that is missing is a mistyped local path.
    if path.startswith((".", "/")) or path.count("/") > 1:
        raise UserError(f"{key}: '{name}' does not exist")
    return path


def is_adapter_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "adapter_config.json")) and not os.path.isfile(
        os.path.join(path, "config.json")
    )


def base_model_path(cfg: ModelConfig) -> str:
    """The base a stage builds on: an SFT run folder becomes its merged model, a builtin name its cached folder, a
    local folder its absolute path (adapters record it, and it must load from any working directory)."""
    path = stage_model_path(resolve_path(cfg.name_or_path))
    if is_adapter_folder(path):
        raise UserError(
            f"model.name_or_path: '{cfg.name_or_path}' is an adapter without a merged model; "
            "run SFT with save_merged=true or point at a full model (an SFT run's merged folder)"
        )
    return os.path.abspath(path) if os.path.exists(path) else path


def load_base_tokenizer(cfg: ModelConfig, base_path: str | None = None):
    """The tokenizer of the base (`base_model_path`: an SFT folder's own), or `model.tokenizer` when set; right-padded,
    with a pad token."""
    if cfg.tokenizer:
        return load_tokenizer(cfg)
    return load_tokenizer(dataclasses.replace(cfg, name_or_path=base_path or base_model_path(cfg)))


def load_tokenizer(cfg: ModelConfig, padding_side: str = "right"):
    """Tokenizer with a pad token and, if configured, a chat template."""
    from transformers import AutoTokenizer

    name = cfg.tokenizer or cfg.name_or_path
    path = resolve_path(name, "model.tokenizer" if cfg.tokenizer else "model.name_or_path")
    if is_adapter_folder(path) and not os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        path = adapter_base(path)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:
        raise UserError(f"model: cannot load a tokenizer from '{name}' ({str(e).splitlines()[0]})") from None
    if tok.pad_token is None:
        # A pad id only ever fills masked positions (we always pass attention masks), so reusing
        # unk/eos is safe; adding a new token would resize the embeddings of a pretrained model.
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    if cfg.chat_template:
        template = cfg.chat_template
        if os.path.isfile(template):
            with open(template) as f:
                template = f.read()
        tok.chat_template = template
    tok.padding_side = padding_side
    return tok


# ----------------------------------------------------------------------------------------------
# Runs that travel: an adapter records a base inside its run folder relative to that folder (`sft/merged`), and a
# base outside it as an absolute path or a hub id, so the run folder can be moved, copied or uploaded.


def run_root(output_dir: str, run: str | None = None) -> str:
    """The run folder (absolute) that the stage output `output_dir` belongs to: the stage's `run` when the output
    lies inside it (runs/x for runs/x/round-2/ppo), else the folder holding the output."""
    out = os.path.abspath(output_dir)
    if run and os.path.commonpath([out, os.path.abspath(run)]) == os.path.abspath(run):
        return os.path.abspath(run)
    return os.path.dirname(out)


def recorded_base(folder: str) -> str | None:
    """`base_model_name_or_path` as `folder/adapter_config.json` records it; None when the folder holds no adapter."""
    path = os.path.join(folder, "adapter_config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("base_model_name_or_path")


def adapter_base(path: str) -> str:
    """The base an adapter folder records, resolved: a path relative to the run folder (`sft/merged`) becomes that
    folder, looked up from the adapter's folder upwards (runs/x for runs/x/reward and runs/x/round-2/reward), so the
    run can move; a hub id, a `builtin:` name or an absolute path is returned as recorded."""
    recorded = recorded_base(path) or ""
    if recorded and not os.path.isabs(recorded) and not recorded.startswith("builtin:"):
        node = os.path.dirname(os.path.abspath(path))
        while True:
            local = os.path.normpath(os.path.join(node, recorded))
            if os.path.exists(local):
                return local
            if os.path.dirname(node) == node:
                break
            node = os.path.dirname(node)
    return recorded


def portable_base(folder: str, run: str | None = None, run_folder: str | None = None) -> str | None:
    """Rewrite `folder/adapter_config.json`'s base so the run folder can move: relative to the run folder
    (`run_root`) when the base lies inside it (runs/x/reward -> `sft/merged`), absolute when it is a local folder
    outside (a base given as `../own/model` is resolved from the working directory the stage ran in), as is for a
    hub id. This framework resolves a relative base from the run folder, and so does PEFT run from there (it
    resolves it from the working directory). `run_folder`: where the adapter will live when `folder` is a temp folder it
    is written through. Returns the absolute base, or None when the folder holds no adapter."""
    recorded = recorded_base(folder)
    if not recorded or recorded.startswith("builtin:"):
        return recorded
    local = os.path.abspath(recorded)  # relative: from the working directory, where the stage loaded it
    if not os.path.exists(local):
        return recorded  # a hub id (or a base that only exists elsewhere): as is
    root = run_root(run_folder or folder, run)
    portable = os.path.relpath(local, root) if os.path.commonpath([local, root]) == root else local
    if portable != recorded:
        config_path = os.path.join(folder, "adapter_config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["base_model_name_or_path"] = portable
        files.write_json(config_path, config, indent=2, sort_keys=True)
    return local


def load_causal_lm(cfg: ModelConfig, name_or_path: str | None = None, device_map=None):
    """AutoModelForCausalLM with the configured dtype/attention; an adapter folder loads base + adapter."""
    from transformers import AutoModelForCausalLM

    name = name_or_path or cfg.name_or_path
    path = resolve_path(name)
    kwargs = dict(
        dtype=resolve_dtype(cfg.dtype),
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
    )
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        if is_adapter_folder(path):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(tiny.resolve(adapter_base(path)), **kwargs)
            model = PeftModel.from_pretrained(base, path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise UserError(f"model.name_or_path: cannot load '{name}' ({str(e).splitlines()[0]})") from None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def stage_model_path(folder: str) -> str:
    """The model a later stage should build on from an earlier stage's output folder.

    An SFT folder's manifest names it (the merged model, or the adapter folder when nothing was
    merged); a plain model folder or hub id is returned as is.
    """
    manifest = os.path.join(folder, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            target = json.load(f).get("outputs", {}).get("model")
        if target:
            return os.path.normpath(target if os.path.isabs(target) else os.path.join(folder, target))
    return folder


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere (LoRA dropout too): a stage that compares the policy with itself or with the reference
    (PPO's ratio of the first minibatch, DPO's policy and reference passes) needs one deterministic network."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
