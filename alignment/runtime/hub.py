"""`push_to_hub`: publish a stage's output folder as a Hugging Face Hub repository that loads on its own.

`stage` builds the folder to upload in a staging directory; `push` uploads it (the only network step). What is
staged depends on where the adapter's base lives:
- a hub id: the adapter as is (small; `AutoPeftModelFor...from_pretrained(repo)` fetches the base);
- a folder that exists only here (the SFT model of this run, the built-in model): the adapter merged into its
  base as a standalone model (`AutoModelForCausalLM` / `AutoModelForSequenceClassification.from_pretrained(repo)`),
  since a base path means nothing on another machine.
Either way the tokenizer, the model card (README.md), config.yaml, manifest.json and the reward stage's
reward_stats.json / eval.json go along; checkpoints, logs and metrics stay.

`preflight` runs before a stage trains (a token, and a hub that answers and accepts it), so a missing token or
network costs one line, not a training run; a push that fails after training is one line too, the output folder
kept as it is, with the command that retries it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from alignment.common.errors import UserError
from alignment.runtime import models, tiny

KEEP = ("README.md", "config.yaml", "manifest.json", "reward_stats.json", "eval.json")
TOKENIZER = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
)
ADAPTER = ("adapter_config.json", "adapter_model.safetensors")


def stage(folder: str, staging: str) -> str:
    """Fill `staging` with what `push` would upload from the output folder `folder`; returns `adapter` or `merged`."""
    os.makedirs(staging, exist_ok=True)
    for name in KEEP + TOKENIZER:
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copy2(os.path.join(folder, name), staging)
    if not models.is_adapter_folder(folder):  # full weights: the folder's model files as they are
        for name in os.listdir(folder):
            if name.endswith((".safetensors", ".json")) and not os.path.exists(os.path.join(staging, name)):
                shutil.copy2(os.path.join(folder, name), staging)
        return "weights"
    base = models.adapter_base(folder)
    if not os.path.exists(tiny.resolve(base)):  # a hub id: the adapter is enough
        for name in ADAPTER:
            shutil.copy2(os.path.join(folder, name), staging)
        return "adapter"
    _merge(folder, tiny.resolve(base), staging)
    return "merged"


def _merge(folder: str, base: str, staging: str) -> None:
    """The adapter merged into its local base, saved as a standalone model (a reward adapter as a 1-label scorer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    with open(os.path.join(folder, "adapter_config.json")) as f:
        task = json.load(f).get("task_type")
    if task == "SEQ_CLS":
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, pad_token_id=tokenizer.pad_token_id
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(base)
    merged = PeftModel.from_pretrained(model, folder).merge_and_unload()
    merged.save_pretrained(staging, safe_serialization=True)


def push(folder: str, repo_id: str, private: bool = True) -> str:
    """Upload the staged output folder to the hub repository `repo_id` (created if missing); returns its URL."""
    from huggingface_hub import HfApi

    staging = tempfile.mkdtemp(prefix="rlhf-push-")
    try:
        kind = stage(folder, staging)
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=staging, repo_id=repo_id, commit_message=f"rlhf-align: {kind} from {folder}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"https://huggingface.co/{repo_id}"


def preflight(repo_id: str) -> None:
    """Before any training: a Hugging Face token, and a hub that answers and accepts it; else one line (UserError)."""
    from huggingface_hub import HfApi, constants, get_token

    where = f"push_to_hub to {repo_id}"
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"{where}: HF_HUB_OFFLINE is set; unset it or set push_to_hub=false (nothing was trained)")
    token = get_token()
    if not token:
        raise UserError(f"{where}: no Hugging Face token; set HF_TOKEN or run `hf auth login` (nothing was trained)")
    try:
        HfApi().whoami(token=token)
    except Exception as e:  # network, DNS, TLS, proxy or HTTP errors: each the user's to fix, none a bug here
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise UserError(f"{where}: the hub refused the token (HTTP {status}) (nothing was trained)") from None
        raise UserError(f"{where}: cannot reach the Hugging Face Hub ({_reason(e)}) (nothing was trained)") from None


def push_or_explain(folder: str, repo_id: str, private: bool = True) -> str:
    """`push`, with a failure as one line (UserError) that says the trained folder is kept and how to retry."""
    try:
        return push(folder, repo_id, private)
    except Exception as e:
        retry = f"python -c \"from alignment.runtime import hub; hub.push('{folder}', '{repo_id}')\""
        raise UserError(
            f"push_to_hub to {repo_id} failed ({_reason(e)}); the trained model is kept in {folder} (retry: {retry})"
        ) from None


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
