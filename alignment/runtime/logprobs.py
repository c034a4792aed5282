"""Per-token quantities of sampled responses as pure functions: log-probs of the taken tokens and entropy.

Every stage that scores responses uses these (PPO's ratio and KL, eval's KL, DPO's sequence
log-probs), always under softmax(logits / temperature) with the sampling temperature. Shapes:
B = batch, T = response length, V = vocabulary. Half-precision logits are upcast to float32 row by
row: a [B, T, V] float32 copy of a 150k vocabulary would be gigabytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
