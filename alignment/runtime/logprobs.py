"""Per-token quantities of sampled responses as pure functions: log-probs of the taken tokens and entropy.

Every stage that scores responses uses these (PPO's ratio and KL, eval's KL, DPO's sequence
log-probs), always under softmax(logits / temperature) with the sampling temperature. Shapes:
B = batch, T = response length, V = vocabulary. Half-precision logits are upcast to float32 row by
row: a [B, T, V] float32 copy of a 150k vocabulary would be gigabytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from alignment.runtime.generation import position_ids_from_mask


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (float64 stays float64, so tests can compare against exact references)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-prob of each taken token under softmax(logits / temperature).

    logits [B, T, V] where logits[:, t] predicts tokens[:, t] (the caller shifts); tokens [B, T] -> [B, T].
    The same temperature must be used here as in sampling, or ratio and KL are biased from step 0.
    """
    out = []
    # a few rows at a time: the float32 copies are [rows, T, V], never [B, T, V] (a 150k vocabulary makes that
    # GBs); with a small vocabulary many rows fit in one chunk, and a row-by-row loop would cost more than the model
    for row_logits, row_tokens in zip(_chunks(logits), _chunks(tokens, logits)):
        row = _fp32(row_logits) / temperature
        taken = torch.gather(row, -1, row_tokens.long().unsqueeze(-1)).squeeze(-1)
        out.append(taken - torch.logsumexp(row, dim=-1))
    return torch.cat(out)


CHUNK_ELEMENTS = 1 << 22
"""Logit elements upcast at once (16 MiB of float32): one row of a large vocabulary, many of a small one."""


def _chunks(x: torch.Tensor, like: torch.Tensor | None = None):
    """`x` split along its first dimension into chunks of rows holding at most CHUNK_ELEMENTS logits (of `like`)."""
    like = x if like is None else like
    per_row = max(1, like[0].numel()) if len(like) else 1
    return torch.split(x, max(1, CHUNK_ELEMENTS // per_row))


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position: [B, T, V] -> [B, T] (nats)."""
    out = []
    for row_logits in _chunks(logits):  # a few rows at a time for memory, as in logprobs_from_logits
        logp = F.log_softmax(_fp32(row_logits) / temperature, dim=-1)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out)


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, prompt_width: int, temperature: float):
    """Log-probs [b, T] of the response tokens from full-sequence logits [b, P + T, V] (prompt + response).

    `logits[:, P - 1 + t]` predicts response token t.
    """
    return logprobs_from_logits(logits[:, prompt_width - 1 : -1], responses, temperature)


def sequence_logprobs(logits: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor, prompt_width: int,
                      temperature: float) -> torch.Tensor:  # fmt: skip
    """Sum over real response tokens (mask [b, T]) of log p(y_t | x, y_<t): [b] float64."""
    return (response_logprobs(logits, responses, prompt_width, temperature).double() * mask).sum(-1)


# --- from hidden states, in chunks: the [B, S, V] logits never exist ------------------------------

LOGITS_CHUNK_SIZE = 1024
"""Positions per LM-head call: a 151,936-way float32 chunk of 1024 positions is 0.6 GB (vs 3 GB for 8 x 640)."""


CPU_CHUNK_LOGITS = 1 << 22
"""On CPU a chunk holds at most this many logits (16 MiB of float32: 27 positions of a 151,936-way vocabulary).
The head's matmul costs the same per position there whatever the chunk, while a chunk's [n, V] temporaries
(logits, softmax, their gradients) are the training pass's memory peak. Elsewhere `chunk_size` alone decides:
an accelerator wants large matmuls."""
CHECKPOINT_MIN_LOGITS = 1 << 22
"""Logits of a whole pass (16 MiB of float32) from which the training pass recomputes each chunk's in the
backward pass rather than keeping them all: below, with a small vocabulary, recomputing costs time and saves
little."""


def _chunk_stats(head, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float, with_entropy: bool):
    """[n, 1 or 2]: log-prob of `tokens` [n] (and entropy) under softmax(head(hidden [n, H]) / temperature)."""
    z = _fp32(head(hidden)) / temperature
    log_norm = torch.logsumexp(z, dim=-1)
    taken = torch.gather(z, -1, tokens.long().unsqueeze(-1)).squeeze(-1) - log_norm
    if not with_entropy:
        return taken.unsqueeze(-1)
    logp = z - log_norm.unsqueeze(-1)
    return torch.stack([taken, -(logp.exp() * logp).sum(-1)], dim=-1)


def hidden_logprobs(hidden: torch.Tensor, head, tokens: torch.Tensor, temperature: float = 1.0,
                    chunk_size: int = LOGITS_CHUNK_SIZE, with_entropy: bool = False):  # fmt: skip
    """(log-probs [B, T], entropy [B, T] or None) of `tokens` [B, T] under softmax(head(hidden) / temperature).

    hidden [B, T, H] where hidden[:, t] predicts tokens[:, t] (the caller shifts); head: the LM head module
    (H -> V, LoRA or not). Equal to `logprobs_from_logits(head(hidden), ...)` within float rounding, but
    only `chunk_size` positions' logits (on CPU at most CPU_CHUNK_LOGITS) exist at a time. With grad on and
    at least CHECKPOINT_MIN_LOGITS logits in the pass, each chunk is recomputed in the backward pass
    (activation checkpointing of the head): autograd keeps the hidden states, not the logits.
    """
    B, T, H = hidden.shape
    flat, flat_tokens = hidden.reshape(B * T, H), tokens.reshape(B * T)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    vocab = getattr(head, "out_features", None)
    if hidden.device.type == "cpu" and vocab:
        chunk_size = min(chunk_size, max(1, CPU_CHUNK_LOGITS // vocab))
    chunks = []
    for start in range(0, B * T, max(1, chunk_size)):
        args = (head, flat[start : start + chunk_size], flat_tokens[start : start + chunk_size], temperature,
                with_entropy)  # fmt: skip
        recompute = grad and (vocab is None or B * T * vocab >= CHECKPOINT_MIN_LOGITS)
        # non-reentrant: it tracks gradients to the head's parameters too (a LoRA on lm_head)
        chunks.append(checkpoint(_chunk_stats, *args, use_reentrant=False) if recompute else _chunk_stats(*args))
    stats = torch.cat(chunks).reshape(B, T, -1) if chunks else hidden.new_zeros(B, T, 2, dtype=torch.float32)
    return stats[..., 0], (stats[..., 1] if with_entropy else None)


def response_logprobs_from_hidden(hidden: torch.Tensor, head, responses: torch.Tensor, prompt_width: int,
                                  temperature: float, chunk_size: int = LOGITS_CHUNK_SIZE,
                                  with_entropy: bool = False):  # fmt: skip
    """`response_logprobs` from the trunk's last hidden states [b, P + T, H]: (log-probs [b, T], entropy or None).

    Only the T response positions go through the head (`hidden[:, P - 1 + t]` predicts response token t).
    """
    return hidden_logprobs(hidden[:, prompt_width - 1 : -1], head, responses, temperature, chunk_size, with_entropy)


def trunk_and_head(model):
    """(the transformer without its LM head, the LM head) of a HF causal LM or a PEFT model around one.

    LoRA layers are injected in place, so both run with whatever adapter is active.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model, base.get_output_embeddings()


def chunkable(model) -> bool:
    """Whether the trunk and the LM head alone make the logits. Not for models that scale or soft-cap them after
    the head (Gemma 2's `final_logit_softcapping`, Cohere's `logit_scale`), nor for PEFT prompt learning (its
    virtual tokens enter in the PEFT model's own forward): those take the full-logits path."""
    peft_config = getattr(model, "active_peft_config", None)
    if getattr(peft_config, "is_prompt_learning", False):
        return False
    config = getattr(model, "config", None)
    return getattr(config, "final_logit_softcapping", None) is None and getattr(config, "logit_scale", None) is None


def policy_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                    temperature: float = 1.0, position_ids: torch.Tensor | None = None,
                    chunk_size: int = LOGITS_CHUNK_SIZE, with_entropy: bool = False):  # fmt: skip
    """(log-probs [B, T], entropy [B, T] or None) of the response tokens `input_ids[:, P:]` under a causal LM.

    The drop-in for `response_logprobs(model(...).logits, ...)`: the trunk runs once and the LM head only on
    response positions, `chunk_size` at a time. input_ids/attention_mask [B, P + T]; position_ids default
    to counting real tokens (as generation numbers left-padded rows).
    """
    position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
    responses = input_ids[:, prompt_width:]
    if not chunkable(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).logits  # fmt: skip
        shifted = logits[:, prompt_width - 1 : -1]
        entropy = entropy_from_logits(shifted, temperature) if with_entropy else None
        return logprobs_from_logits(shifted, responses, temperature), entropy
    trunk, head = trunk_and_head(model)
    hidden = trunk(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    return response_logprobs_from_hidden(hidden, head, responses, prompt_width, temperature, chunk_size, with_entropy)


def policy_sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                             prompt_width: int, temperature: float = 1.0, position_ids: torch.Tensor | None = None,
                             chunk_size: int = LOGITS_CHUNK_SIZE) -> torch.Tensor:  # fmt: skip
    """The drop-in for `sequence_logprobs(model(...).logits, ...)`: sum over real response tokens (mask [B, T])
    of log p(y_t | x, y_<t), [B] float64, without the [B, S, V] logits."""
    logprobs, _ = policy_logprobs(model, input_ids, attention_mask, prompt_width, temperature, position_ids, chunk_size)
    return (logprobs.double() * mask).sum(-1)
