"""The model card (README.md) of a stage's output folder: what it is, what it was trained on, how to load it.

Written from the manifest and the resolved config.yaml beside it, replacing PEFT's empty template, so a run
folder (or what `push_to_hub` uploads) explains itself.
"""

from __future__ import annotations

import json
import os

import yaml

from alignment.runtime import files

# The hyperparameters a reader looks for first, by dotted config key (those a stage has).
KEY_SETTINGS = (
    "adapter.method", "adapter.r", "adapter.alpha", "policy.r", "policy.alpha", "train.learning_rate",
    "train.epochs", "train.max_steps", "train.per_device_batch_size", "train.gradient_accumulation_steps",
    "train.total_episodes", "rollout.per_device_batch_size", "rollout.response_length", "ppo.epochs",
    "kl.coef", "kl.controller", "loss.ties", "data.max_length", "seed",
)  # fmt: skip

WHAT = {
    "sft": "a causal LM fine-tuned on prompt/completion (or chat) data: the policy every later stage starts from",
    "reward": "a scalar reward model (Bradley-Terry on K-wise rankings): a LoRA adapter with a `score` head",
    "ppo": "the PPO policy: a LoRA adapter on the frozen SFT base, trained against the reward model",
}

LOAD = {
    "sft": """```python
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("{folder}/merged")     # the merged model (when saved)
# or the adapter on its base (recorded in adapter_config.json, relative to this folder):
from peft import PeftModel
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{folder}")
```""",
    "reward": """```python
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{folder}")
base = AutoModelForSequenceClassification.from_pretrained("{base}", num_labels=1, pad_token_id=tok.pad_token_id)
model = PeftModel.from_pretrained(base, "{folder}").eval()
# score = prompt text + completion + EOS (the score is read at the EOS), exactly as in training:
ids = tok(prompt)["input_ids"] + tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
reward = model(torch.tensor([ids])).logits[0, 0]
```
(or `reward.model.load_reward_model("{folder}")` and `score_texts` in this framework)""",
    "ppo": """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{folder}")
```""",
}


def write(output_dir: str, manifest: dict) -> str:
    """Write output_dir/README.md for a stage that saved a model; returns its path."""
    stage = manifest["stage"]
    config = _config(output_dir)
    inputs = manifest.get("inputs", {})
    base = inputs.get("base") or inputs.get("model") or "?"
    data = inputs.get("data") or "?"
    lines = [
        "---",
        "library_name: peft" if "adapter" in manifest.get("outputs", {}) else "library_name: transformers",
        f"base_model: {_hub_or_local(base)}",
        "tags: [rlhf-align, " + stage + "]",
        "---",
        "",
        f"# {os.path.basename(os.path.abspath(output_dir))}: {stage}",
        "",
        f"{WHAT.get(stage, stage)}. Trained with rlhf-align (`rlhf {stage}`) on {manifest.get('finished', '?')}.",
        "",
        f"- **base model**: `{base}`",
        f"- **data**: `{data}`" + (f" (held out: `{inputs['eval_data']}`)" if inputs.get("eval_data") else ""),
    ]
    if inputs.get("reward"):
        lines.append(f"- **reward**: `{inputs['reward']}`")
    settings = [(k, _dotted(config, k)) for k in KEY_SETTINGS]
    lines += ["", "## Hyperparameters", "", "| key | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in settings if v is not None]
    lines += ["", "The full resolved config is `config.yaml`; inputs, outputs and versions are in `manifest.json`."]
    metrics = {k: v for k, v in manifest.get("metrics", {}).items() if isinstance(v, (int, float))}
    if metrics:
        lines += ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {v:.4g} |" for k, v in sorted(metrics.items())]
    lines += ["", "## Load it", "", LOAD.get(stage, "").format(folder=output_dir.rstrip("/"), base=base), ""]
    path = os.path.join(output_dir, "README.md")
    files.write_atomic(path, "\n".join(lines))
    return path


def _config(output_dir: str) -> dict:
    try:
        with open(os.path.join(output_dir, "config.yaml")) as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _dotted(data: dict, key: str):
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data if not isinstance(data, (dict, list)) else json.dumps(data)


def _hub_or_local(base: str) -> str:
    return base if not os.path.isabs(base) else "local"
