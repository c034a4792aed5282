"""Rows in TRL's formats -> token ids and loss masks.

Formats: `{"prompt": str, "completion": str}`, conversational prompt/completion (message lists),
and `{"messages": [...]}`. The loss covers the completion / every assistant turn only, unless
`completion_only` is off. Prompts and completions are tokenized separately, exactly as generation
later sees them (prompt ids, then sampled ids), so SFT and RL agree on token boundaries.
"""

from __future__ import annotations

from alignment.common.errors import UserError

IGNORE = -100


def row_format(row: dict, where: str) -> str:
    """`messages`, `prompt_completion` or an error naming the row."""
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        if not any(m["role"] == "assistant" for m in msgs):
            raise UserError(f"{where}: 'messages' has no assistant turn to learn from")
        return "messages"
    if "prompt" in row and "completion" in row:
        for k in ("prompt", "completion"):
            if not isinstance(row[k], (str, list)) or not row[k]:
                raise UserError(f"{where}: '{k}' must be a non-empty string or message list")
        if type(row["prompt"]) is not type(row["completion"]):
            raise UserError(f"{where}: 'prompt' and 'completion' must both be strings or both message lists")
        if isinstance(row["completion"], str) and not row["completion"].strip():
            raise UserError(f"{where}: 'completion' is empty")
        return "prompt_completion"
    keys = ", ".join(sorted(row)) or "none"
    raise UserError(f"{where}: expected 'prompt'+'completion' or 'messages' columns, found: {keys}")


def prompt_text(tokenizer, prompt) -> str:
    """A prompt as the model sees it: strings as is, message lists through the chat template."""
    if isinstance(prompt, str):
        return prompt
    if not tokenizer.chat_template:
        raise UserError("the data has chat messages but the tokenizer has no chat template (set model.chat_template)")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Prompt token ids, with BOS where the tokenizer adds one (the chat template already has its own)."""
    text = prompt_text(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"]


def encode_sft(tokenizer, row: dict, max_length: int, completion_only: bool = True, where: str = "row") -> dict:
    """`{"input_ids": [T], "labels": [T]}` with labels IGNORE outside the trained spans."""
    kind = row_format(row, where)
    if kind == "prompt_completion" and isinstance(row["prompt"], str):
        prompt_ids = encode_prompt(tokenizer, row["prompt"])
        completion_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        completion_ids = completion_ids + [tokenizer.eos_token_id]
        ids = prompt_ids + completion_ids
        labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + completion_ids
    else:
        messages = row["messages"] if kind == "messages" else list(row["prompt"]) + list(row["completion"])
        ids, labels = _encode_messages(tokenizer, messages, completion_only, where)
    if not any(label != IGNORE for label in labels[:max_length]):
        raise UserError(f"{where}: nothing left to learn from after truncation to data.max_length={max_length}")
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def _encode_messages(tokenizer, messages: list[dict], completion_only: bool, where: str):
    if not tokenizer.chat_template:
        raise UserError(f"{where}: chat messages need a tokenizer with a chat template (set model.chat_template)")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if not completion_only:
        return ids, list(ids)
    labels = [IGNORE] * len(ids)
    # Each assistant turn spans from the end of the prompt that precedes it (generation prompt
    # included) to the end of the conversation rendered through that turn. This relies on the
    # template rendering a prefix of the conversation as a prefix of the text, which chat
    # templates do; a template that does not is reported rather than silently mis-masked.
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(through) or not through.startswith(before):
            raise UserError(f"{where}: the chat template does not render turns as prefixes; cannot mask turns")
        start = len(tokenizer(before, add_special_tokens=False)["input_ids"]) if before else 0
        end = len(tokenizer(through, add_special_tokens=False)["input_ids"])
        labels[start:end] = ids[start:end]
    return ids, labels


def pack(examples: list[dict], max_length: int) -> list[dict]:
    """Best-fit-decreasing packing into rows of at most `max_length` tokens with per-example positions.

    Examples are never split. Each packed row carries `position_ids` restarting at 0 for every
    example; the model is called with no attention mask and `use_cache=False` (with a cache,
    transformers skips packed-sequence detection), so it builds a block-diagonal causal mask and
    examples do not attend to each other.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        best = min((b for b in range(len(bins)) if space[b] >= n), key=lambda b: space[b], default=None)
        if best is None:
            bins.append([i])
            space.append(max_length - n)
        else:
            bins[best].append(i)
            space[best] -= n
    packed = []
    for members in bins:
        row = {"input_ids": [], "labels": [], "position_ids": []}
        for i in sorted(members):
            n = len(examples[i]["input_ids"])
            row["input_ids"] += examples[i]["input_ids"]
            # An example's first token is never a target: it would be "predicted" from the previous example.
            row["labels"] += [IGNORE] + list(examples[i]["labels"][1:])
            row["position_ids"] += list(range(n))
        packed.append(row)
    return packed


def collate(examples: list[dict], pad_id: int, weights: list[float] | None = None) -> dict:
    """Right-pad a list of encoded examples into tensors (`right_pad`); `weights` zero out filler examples."""
    import torch

    from alignment.runtime.generation import right_pad

    input_ids, attention_mask = right_pad([e["input_ids"] for e in examples], pad_id)
    width = input_ids.shape[1]
    labels, positions = [], []
    for j, e in enumerate(examples):
        n = len(e["input_ids"])
        row = list(e["labels"]) if weights is None or weights[j] else [IGNORE] * n
        labels.append(row + [IGNORE] * (width - n))
        positions.append((list(e["position_ids"]) if "position_ids" in e else list(range(n))) + list(range(width - n)))
    out = {"input_ids": input_ids, "labels": torch.tensor(labels, dtype=torch.long)}
    if "position_ids" in examples[0]:
        # No attention mask: transformers derives the block-diagonal mask from position_ids.
        out["position_ids"] = torch.tensor(positions, dtype=torch.long)
    else:
        out["attention_mask"] = attention_mask
    return out
