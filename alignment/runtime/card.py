"""The model card (README.md) of a stage's output folder: what it is, what it was trained on, how to load it.

Written from the manifest and the resolved config.yaml beside it, replacing PEFT's empty template, so a run
folder (or what `push_to_hub` uploads) explains itself. Its "Load it" lines are relative to the run folder and
run from there, so they keep working after the run folder is moved or copied (the adapter records a base inside
the run relative to it: `models.portable_base`).
"""

from __future__ import annotations

import json
import os

import yaml

from alignment.common import files
from alignment.runtime import models

# The hyperparameters a reader looks for first, by dotted config key (those a stage has).
KEY_SETTINGS = (
    "algorithm",
    "adapter.method",
    "adapter.r",
    "adapter.alpha",
    "policy.r",
    "policy.alpha",
    "loss.type",
    "loss.beta",
    "train.learning_rate",
    "train.epochs",
    "train.max_steps",
    "train.per_device_batch_size",
    "train.gradient_accumulation_steps",
    "train.total_episodes",
    "rollout.per_device_batch_size",
    "rollout.samples_per_prompt",
    "rollout.response_length",
    "ppo.epochs",
    "kl.coef",
    "kl.controller",
    "loss.ties",
    "data.max_length",
    "seed",
)

WHAT = {
    "sft": "a causal LM fine-tuned on prompt/completion (or chat) data: the policy every later stage starts from",
    "reward": "a scalar reward model (Bradley-Terry on K-wise rankings): a LoRA adapter with a `score` head",
    "ppo": "the PPO policy: a LoRA adapter on the frozen SFT base, trained online against the reward model with a "
    "value adapter (GAE advantages)",
    "rloo": "the RLOO policy: a LoRA adapter on the frozen SFT base, trained online against the reward model, each "
    "sample's baseline the mean of the other samples of its prompt (no value adapter)",
    "grpo": "the GRPO policy: a LoRA adapter on the frozen SFT base, trained online against the reward model with "
    "advantages relative to its group's mean (grpo.scale: divided by a std or not; no value adapter)",
    "dpo": "the DPO policy: a LoRA adapter on the SFT base (also the reference, with the adapter off), trained straight "
    "from the preference rankings with the `{loss}` loss (beta {beta}); no reward model",
}

COMMAND = {"rloo": "rlhf ppo algorithm=rloo", "grpo": "rlhf ppo algorithm=grpo"}

CAUSAL_LM = """```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("{me}")
{model} = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{me}")
```"""

WEIGHTS = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("{me}")
model = AutoModelForCausalLM.from_pretrained("{me}")
```"""

MERGED = """

The same model merged into its base, standalone:

```python
from transformers import AutoModelForCausalLM
{model} = AutoModelForCausalLM.from_pretrained("{me}/merged")
```"""

REWARD_ADAPTER = """from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{me}")
base = AutoModelForSequenceClassification.from_pretrained("{base}", num_labels=1, pad_token_id=tok.pad_token_id)
model = PeftModel.from_pretrained(base, "{me}").eval()  # the trained score head comes with the adapter"""

REWARD_WEIGHTS = """from transformers import AutoModelForSequenceClassification, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{me}")
model = AutoModelForSequenceClassification.from_pretrained("{me}").eval()"""

REWARD = """```python
import torch
{load}
# the score of prompt text + completion + EOS (read at the EOS), exactly as in training:
prompt, completion = "Review of the cafe:", " The coffee was great."
ids = tok(prompt)["input_ids"] + tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
with torch.no_grad():
    reward = model(torch.tensor([ids])).logits[0, 0].item()
```
(or `reward.model.load_reward_model("{me}")` and `score_texts` in this framework)"""


def write(output_dir: str, manifest: dict, run: str | None = None) -> str:
    """Write output_dir/README.md for a stage that saved a model; returns its path."""
    kind = _kind(manifest)
    config = _config(output_dir)
    inputs = manifest.get("inputs", {})
    root = models.run_root(output_dir, run)
    me = os.path.relpath(os.path.abspath(output_dir), root)
    base, where = base_of(output_dir, root)
    data = inputs.get("data") or "?"
    lines = [
        "---",
        "library_name: peft" if "adapter" in manifest.get("outputs", {}) else "library_name: transformers",
        f"base_model: {base if where == 'hub' else 'local'}",
        f"tags: [rlhf-align, {kind}]",
        "---",
        "",
        f"# {os.path.basename(root)}/{me}: {kind}",
        "",
        f"{_sentence(_what(kind, config))}. Trained with rlhf-align (`{COMMAND.get(kind, 'rlhf ' + kind)}`) on "
        f"{manifest.get('finished', '?')}.",
        "",
        f"- **base model**: {_base_line(base, where, inputs)}",
        f"- **data**: `{data}`" + (f" (held out: `{inputs['eval_data']}`)" if inputs.get("eval_data") else ""),
    ]
    if inputs.get("reward"):
        lines.append(f"- **reward**: `{inputs['reward']}`")
    lines += _settings(config) + _metrics(manifest)
    lines += ["", "## Load it", "", _load_text(kind, me, base, manifest), ""]
    path = os.path.join(output_dir, "README.md")
    files.write_atomic(path, "\n".join(lines))
    return path


def base_of(output_dir: str, root: str) -> tuple[str | None, str]:
    """(the base as the loading lines name it, where it lives): `run` (a path relative to the run folder `root`),
    `local` (an absolute path outside it), `hub` (a hub id), or (None, `none`) for a folder with full weights."""
    recorded = models.recorded_base(output_dir)
    if recorded is None:
        return None, "none"
    if os.path.isabs(recorded):
        return recorded, "local"
    resolved = models.adapter_base(output_dir)
    if os.path.isabs(resolved) and os.path.exists(resolved):
        return os.path.relpath(resolved, root), "run"
    return recorded, "hub"


def _base_line(base: str | None, where: str, inputs: dict) -> str:
    if where == "run":
        return f"`{base}`, inside this run folder: recorded relative to it, so the run folder can be moved or copied"
    if where == "local":
        return (
            f"`{base}`, outside this run folder: recorded as an absolute path (the run loads wherever it moves "
            "while the base stays there)"
        )
    if where == "hub":
        return f"`{base}` (a hub id)"
    return f"`{inputs.get('base') or inputs.get('model') or '?'}` (full weights saved here: no base needed)"


def _kind(manifest: dict) -> str:
    """The stage, with PPO's algorithm: rloo and grpo runs are not "the PPO policy"."""
    stage = manifest["stage"]
    return manifest.get("algorithm", stage) if stage == "ppo" else stage


def _what(kind: str, config: dict) -> str:
    loss = config.get("loss") or {}
    return WHAT.get(kind, kind).format(loss=loss.get("type", "?"), beta=loss.get("beta", "?"))


def _load_text(kind: str, me: str, base: str | None, manifest: dict) -> str:
    """Loading lines relative to the run folder, with the sentence that says so."""
    intro = (
        f"From the run folder (the folder holding `{me}`, wherever it is now; every path below is relative to it, "
        f"so `cd` there first):\n\n"
    )
    if kind == "reward":
        code = REWARD.replace("{load}", REWARD_ADAPTER if base is not None else REWARD_WEIGHTS)
    elif base is None:
        code = WEIGHTS
    else:
        code = CAUSAL_LM
    name = "policy" if kind != "sft" else "model"
    text = intro + code.format(me=me, base=base, model=name)
    if manifest.get("outputs", {}).get("model") == "merged":
        text += MERGED.format(me=me, model=name)
    return text


def _settings(config: dict) -> list[str]:
    settings = [(k, _dotted(config, k)) for k in KEY_SETTINGS]
    lines = ["", "## Hyperparameters", "", "| key | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in settings if v is not None]
    return lines + [
        "",
        "The full resolved config is `config.yaml`; inputs, outputs and versions are in `manifest.json`.",
    ]


def _metrics(manifest: dict) -> list[str]:
    metrics = {k: v for k, v in manifest.get("metrics", {}).items() if isinstance(v, (int, float))}
    if not metrics:
        return []
    return ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"] + [
        f"| `{k}` | {v:.4g} |" for k, v in sorted(metrics.items())
    ]


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


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
