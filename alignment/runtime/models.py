"""Model and tokenizer loading: hub ids, local folders, `builtin:` models, and adapter folders."""

from __future__ import annotations

import json
import os

import torch

from alignment.config import ModelConfig, UserError
from alignment.runtime import files, tiny

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


def adapter_base(path: str) -> str:
    """The base an adapter folder records, resolved: a path relative to the run folder holding the adapter
    (`sft/merged` for runs/x/reward: how runs record a base inside the run, so the folder can move) becomes that
    folder; a hub id, a `builtin:` name or an absolute path is returned as recorded."""
    with open(os.path.join(path, "adapter_config.json")) as f:
        recorded = json.load(f)["base_model_name_or_path"]
    if recorded and not os.path.isabs(recorded) and not recorded.startswith("builtin:"):
        local = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), recorded))
        if os.path.exists(local):
            return local
    return recorded


def portable_base(folder: str, run_folder: str | None = None) -> str | None:
    """Rewrite `folder/adapter_config.json`'s base relative to the run folder holding the adapter when the base lies
    in it (runs/x/reward -> `sft/merged`), so copying or moving the run keeps it loadable: this framework resolves
    it from the run folder, and so does PEFT run from there (it resolves a relative base from the working
    directory). `run_folder`: where the adapter will live when `folder` is a temp folder it is written through.
    Returns the absolute base (for the manifest), or None when the folder holds no adapter."""
    config_path = os.path.join(folder, "adapter_config.json")
    if not os.path.isfile(config_path):
        return None
    with open(config_path) as f:
        config = json.load(f)
    recorded = config.get("base_model_name_or_path")
    if not recorded or not os.path.isabs(recorded) or not os.path.exists(recorded):
        return recorded  # a hub id (or a base that only exists elsewhere): as is
    run = os.path.dirname(os.path.abspath(run_folder or folder))
    if os.path.commonpath([os.path.abspath(recorded), run]) == run:
        config["base_model_name_or_path"] = os.path.relpath(recorded, run)
        files.write_json(config_path, config, indent=2, sort_keys=True)
    return recorded


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
