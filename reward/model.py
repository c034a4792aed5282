"""The scalar-head reward model: a causal-LM base as `AutoModelForSequenceClassification(num_labels=1)`.

The score is the head applied to the hidden state of the last non-pad token (transformers reads it
there given `config.pad_token_id`). A text is scored exactly as PPO will see it: the prompt as the
policy sees it (chat template with generation prompt for message lists), the completion text right
after it, then EOS, which is where the score is read.

A trained reward model is saved either as a PEFT LoRA adapter whose `modules_to_save` holds the
`score` head (trained in full), or as a full model. Both load with :func:`load_reward_model`; the
adapter also loads with plain PEFT (see `load_reward_model`'s docstring).
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from alignment.common.errors import UserError
from alignment.config.shared import AdapterConfig, ModelConfig
from alignment.runtime import adapters, models, tiny
from alignment.runtime.formatting import prompt_text
from alignment.runtime.generation import right_pad

HEAD = "score"
STATS_FILE = "reward_stats.json"


def completion_text(completion) -> str:
    """A completion as text: a string as is; a message list as its messages' contents in order."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion)


def encode_text(tokenizer, prompt, completion, max_length: int) -> tuple[list[int], int]:
    """(token ids of prompt + completion + EOS, completion token count), keeping the last `max_length` tokens.

    EOS is appended unless it doubles as the pad token (then the score would be read before it, so
    it is left out and the score is read at the completion's last token). Truncation drops tokens
    from the left: the end of the text is where the score is read.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
    completion_ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != tokenizer.pad_token_id:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    ids = prompt_ids + completion_ids
    return ids[-max_length:], len(completion_ids)


def build(model_cfg: ModelConfig, adapter_cfg: AdapterConfig, tokenizer):
    """A fresh reward model on the base: scalar head, pad id set, wrapped by the configured adapter.

    For LoRA/IA3 the `score` head is added to `modules_to_save` so it trains in full and is saved
    with the adapter (a LoRA on a randomly initialised head would be a low-rank view of noise).
    """
    from transformers import AutoModelForSequenceClassification

    path = models.base_model_path(model_cfg)
    kwargs = dict(dtype=models.resolve_dtype(model_cfg.dtype), trust_remote_code=model_cfg.trust_remote_code)
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, pad_token_id=tokenizer.pad_token_id, revision=model_cfg.revision, **kwargs
        )
    except (OSError, ValueError) as e:
        raise UserError(f"model.name_or_path: cannot load '{path}' for scoring ({str(e).splitlines()[0]})") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if adapter_cfg.method in ("lora", "ia3") and HEAD not in adapter_cfg.modules_to_save:
        adapter_cfg = dataclasses.replace(adapter_cfg, modules_to_save=[*adapter_cfg.modules_to_save, HEAD])
    if adapter_cfg.method == "selective" and not any(HEAD in t for t in adapter_cfg.trainable):
        adapter_cfg = dataclasses.replace(adapter_cfg, trainable=[*adapter_cfg.trainable, HEAD])
    if adapter_cfg.method == "prompt_tuning":
        raise UserError("adapter.method: prompt_tuning cannot train the score head; use lora, ia3, selective or full")
    return adapters.apply(model, adapter_cfg, task_type="SEQ_CLS")


def scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Rewards [N] (float32) for right-padded rows [N, T]."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, 0].float()


def load_reward_model(folder: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) from a reward run folder, in eval mode.

    An adapter folder loads as base + adapter through PEFT; the base is the one recorded in
    adapter_config.json. Without this function, either of these loads it (num_labels=1 is needed
    because the base's own config says nothing about the head):
        AutoPeftModelForSequenceClassification.from_pretrained(folder, num_labels=1)
        PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=1), folder)
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not os.path.isdir(folder):
        raise UserError(f"reward model: '{folder}' does not exist")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    kwargs = {"num_labels": 1, "pad_token_id": tokenizer.pad_token_id}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if models.is_adapter_folder(folder):
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(tiny.resolve(models.adapter_base(folder)), **kwargs)
        model = PeftModel.from_pretrained(base, folder)
    elif os.path.isfile(os.path.join(folder, "config.json")):
        model = AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)
    else:
        raise UserError(f"reward model: '{folder}' holds neither an adapter nor a model")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


@torch.no_grad()
def score_texts(model, tokenizer, prompts: list, completions: list, batch_size: int = 16, max_length: int = 1024):
    """Rewards (list of floats) of each (prompt, completion), scored as in training."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [
            encode_text(tokenizer, p, c, max_length)[0]
            for p, c in zip(prompts[start : start + batch_size], completions[start : start + batch_size])
        ]
        ids, mask = right_pad(encoded, tokenizer.pad_token_id)
        out += scores(model, ids.to(device), mask.to(device)).tolist()
    return out


def read_stats(folder: str) -> dict:
    """`reward_stats.json` of a reward run: mean and std of rewards on the reference set (for normalising)."""
    path = os.path.join(folder, STATS_FILE)
    if not os.path.isfile(path):
        raise UserError(f"reward model: '{folder}' has no {STATS_FILE}")
    with open(path) as f:
        return json.load(f)


def read_held_out(folder: str) -> dict | None:
    """`eval.json` of a reward run (held-out accuracy on `pairs`), or None: trained without held-out rankings, or a
    model from elsewhere."""
    path = os.path.join(folder, "eval.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and isinstance(report.get("accuracy"), (int, float)) else None


def at_chance(report: dict | None) -> bool:
    """Whether a held-out report (eval.json) shows pairwise accuracy no better than a coin; False without pairs."""
    return bool(report and report.get("pairs") and report["accuracy"] <= 0.5)


def normalize(rewards: torch.Tensor, stats: dict) -> torch.Tensor:
    """(rewards - mean) / std with the reference statistics, so the reference set has mean 0 and std 1."""
    return (rewards - stats["mean"]) / max(stats["std"], 1e-8)
