"""Per-token quantities of sampled responses as pure functions: log-probs of the taken tokens and entropy.

Every stage that scores responses uses these (PPO's ratio and KL, eval's KL, DPO's sequence
log-probs), always under softmax(logits / temperature) with the sampling temperature. Shapes:
B = batch, T = response length, V = vocabulary. Half-precision logits are upcast to float32 row by
row: a [B, T, V] float32 copy of a 150k vocabulary would be gigabytes.
"""

from __future__ import annotations

from typing import NamedTuple

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


def sequence_logprobs(
    logits: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor, prompt_width: int, temperature: float
) -> torch.Tensor:
    """Sum over real response tokens (mask [b, T]) of log p(y_t | x, y_<t): [b] float64."""
    return (response_logprobs(logits, responses, prompt_width, temperature).double() * mask).sum(-1)


# --- from hidden states, in chunks: the [B, S, V] logits never exist ------------------------------

LOGITS_CHUNK_SIZE = 1024
"""Positions per LM-head call: a 151,936-way float32 chunk of 1024 positions is 0.6 GB (vs 3 GB for 8 x 640)."""


CPU_CHUNK_LOGITS = 1 << 22
"""On CPU a chunk holds at most this many logits (16 MiB of float32: 27 positions of a 151,936-way vocabulary).
A chunk's [n, V] buffers are the training pass's memory peak there, while a chunk of few positions reads the
whole head's weight for little work (at 151,936 x 256 on one Xeon core: 6.1 ms a position for chunks of 6, 1.6 for
27, 0.9 for 54). Elsewhere `chunk_size` alone decides: an accelerator wants large matmuls."""
CHECKPOINT_MIN_LOGITS = 1 << 22
"""Logits of a whole pass (16 MiB of float32) from which the training pass recomputes each chunk's in the
backward pass rather than keeping them all: below, with a small vocabulary, recomputing costs time and saves
little."""


LOG_ZERO = -1e30
"""A finite stand-in for log 0 (masked logits): -inf would turn an empty mask's log-mass into nan gradients."""


class TokenStats(NamedTuple):
    """Per-token quantities of the tokens a causal LM predicts (float32 at least; [B, T] unless noted)."""

    logprobs: torch.Tensor
    """log p(token) under softmax(logits / temperature)."""
    entropy: torch.Tensor | None
    """Entropy of that distribution (nats), when asked for."""
    log_mass: torch.Tensor | None
    """log of the probability it puts on the vocabulary mask `mass_on` [V], when one is given."""
    hidden: torch.Tensor | None = None
    """The trunk's last hidden states [B, S, H] (`score_tokens(keep_hidden=True)`: PPO's shared value head)."""


LEAN_MIN_VOCAB = 1 << 14
"""Vocabulary from which chunks are computed in place (`_stats_in_place`, `_FrozenHeadChunk`): every real LLM's
(32,000 to 256,000 tokens), where a chunk's [n, V] buffers are the pass's memory peak. Smaller heads keep the plain
expressions (the tests' and the demo's tiny models: their numbers stay bit for bit what they were)."""


def _chunk_stats(
    head,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float,
    with_entropy: bool,
    mass_on: torch.Tensor | None = None,
) -> torch.Tensor:
    """[n, 1 + entropy + mass]: log-prob of `tokens` [n] (then entropy, then log-mass on the bool mask `mass_on` [V])
    under softmax(head(hidden [n, H]) / temperature)."""
    z = _fp32(head(hidden))
    if not torch.is_grad_enabled() and z.shape[-1] >= LEAN_MIN_VOCAB:
        return _stats_in_place(z, tokens, temperature, with_entropy, mass_on)
    if temperature != 1.0:  # at 1 a division would only copy [n, V] (and its gradient)
        z = z / temperature
    log_norm = torch.logsumexp(z, dim=-1)
    columns = [torch.gather(z, -1, tokens.long().unsqueeze(-1)).squeeze(-1) - log_norm]
    if with_entropy:
        logp = z - log_norm.unsqueeze(-1)
        columns.append(-(logp.exp() * logp).sum(-1))
    if mass_on is not None:
        columns.append(torch.logsumexp(z.masked_fill(~mass_on, LOG_ZERO), dim=-1) - log_norm)
    return torch.stack(columns, dim=-1)


def _stats_in_place(z: torch.Tensor, tokens, temperature: float, with_entropy: bool, mass_on) -> torch.Tensor:
    """`_chunk_stats` of the head's fresh output z [n, V] (overwritten) without autograd: one [n, V] buffer (two with
    entropy) where the expressions above make four (logsumexp's temporaries, the masked copy). A mass below float's
    smallest normal number reads as that number."""
    if temperature != 1.0:
        z.div_(temperature)
    z.sub_(z.max(-1, keepdim=True).values)  # shifted: exp cannot overflow, and log p = z - log(sum exp(z))
    taken = torch.gather(z, -1, tokens.long().unsqueeze(-1)).squeeze(-1)
    p = z.exp() if with_entropy else z.exp_()
    total = p.sum(-1)
    log_norm = total.log()
    columns = [taken - log_norm]
    if with_entropy:  # H = log S - sum(e^z z) / S, the dot products row by row without an [n, V] product
        columns.append(log_norm - torch.bmm(p.unsqueeze(1), z.unsqueeze(2)).reshape(-1) / total)
    if mass_on is not None:
        inside = p @ mass_on.to(p.dtype)
        columns.append(inside.clamp_min(torch.finfo(p.dtype).tiny).log() - log_norm)
    return torch.stack(columns, dim=-1)


class _FrozenHeadChunk(torch.autograd.Function):
    """`_chunk_stats` of a frozen LM head at a large vocabulary whose backward pass recomputes the chunk's logits and
    builds their gradient in place from closed forms, then runs the head's backward for the hidden states only.
    Autograd through `_chunk_stats` (what `checkpoint` replays) keeps each op's [n, V] output and gradient alive at
    once, four to six of them: at a 151,936-token vocabulary, most of DPO's memory peak on CPU. With z = head(h) / T,
    p = softmax(z) and upstream gradients g (log-prob), e (entropy) or m (log-mass M on the mask S; not both):
    dL/dz = g (onehot - p) - e p (log p + H) + m (exp(log p - M) [S] - p)."""

    @staticmethod
    def forward(ctx, hidden, tokens, temperature, with_entropy, mass_on, head):
        with torch.no_grad():
            out = _chunk_stats(head, hidden, tokens, temperature, with_entropy, mass_on)
        ctx.save_for_backward(hidden, tokens, out)
        ctx.head, ctx.temperature, ctx.with_entropy, ctx.mass_on = head, temperature, with_entropy, mass_on
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, tokens, out = ctx.saved_tensors
        with torch.enable_grad():
            h = hidden.detach().requires_grad_(True)
            raw = ctx.head(h)  # under ZeRO-3 its hooks gather the weight again, as a checkpoint's replay would
        with torch.no_grad():
            grad_z = _logit_gradient(
                raw.detach(), tokens, out, grad_out, ctx.temperature, ctx.with_entropy, ctx.mass_on
            )
        (grad_hidden,) = torch.autograd.grad(raw, h, grad_z.to(raw.dtype))
        return grad_hidden, None, None, None, None, None


def _logit_gradient(raw, tokens, out, grad_out, temperature: float, with_entropy: bool, mass_on):
    """dL/d head(h) [n, V] of `_FrozenHeadChunk` (see there), in place in two [n, V] buffers."""
    z = _fp32(raw)
    z = z.clone() if z is raw else z  # written in place below: never the head's own output
    if temperature != 1.0:
        z.div_(temperature)
    taken = tokens.long().unsqueeze(-1)
    logp = z.sub_(torch.gather(z, -1, taken) - out[:, :1])  # log p = z - (z[token] - log p(token))
    g, row = grad_out[:, :1], -grad_out[:, :1]
    if with_entropy:  # p (-e (log p + H) - g)
        p = logp.exp()
        grad = logp.add_(out[:, 1:2]).mul_(-grad_out[:, 1:2]).add_(row).mul_(p)
    elif mass_on is not None:  # p (-g - m) + m exp(log p - M) on S: at most m where p is tiny, whatever M is
        m = grad_out[:, -1:]
        on_mask = logp.sub(out[:, -1:]).exp_().mul_(mass_on.to(logp.dtype)).mul_(m)
        grad = logp.exp_().mul_(row - m).add_(on_mask)
    else:
        grad = logp.exp_().mul_(row)
    grad.scatter_add_(-1, taken, g)
    return grad.div_(temperature) if temperature != 1.0 else grad


def hidden_token_stats(
    hidden: torch.Tensor,
    head,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = LOGITS_CHUNK_SIZE,
    with_entropy: bool = False,
    mass_on: torch.Tensor | None = None,
) -> TokenStats:
    """`TokenStats` of `tokens` [B, T] under softmax(head(hidden) / temperature), `chunk_size` positions at a time.

    hidden [B, T, H] where hidden[:, t] predicts tokens[:, t] (the caller shifts); head: the LM head module
    (H -> V, LoRA or not); mass_on: a bool mask [V] whose log-mass each position also gets. Equal to the same
    quantities of `head(hidden)` within float rounding, but only `chunk_size` positions' logits (on CPU at most
    CPU_CHUNK_LOGITS) exist at a time. With grad on and at least CHECKPOINT_MIN_LOGITS logits in the pass, each
    chunk is recomputed in the backward pass (activation checkpointing of the head): autograd keeps the hidden
    states, not the logits.
    """
    B, T, H = hidden.shape
    flat, flat_tokens = hidden.reshape(B * T, H), tokens.reshape(B * T)
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    vocab = getattr(head, "out_features", None)
    if hidden.device.type == "cpu" and vocab:
        chunk_size = min(chunk_size, max(1, CPU_CHUNK_LOGITS // vocab))
    mass_on = None if mass_on is None else mass_on.to(hidden.device)
    recompute = grad and (vocab is None or B * T * vocab >= CHECKPOINT_MIN_LOGITS)
    # the usual case: adapters in the trunk only, a large vocabulary; not entropy and mass at once (no stage asks)
    lean = not any(p.requires_grad for p in head.parameters()) and (vocab or 0) >= LEAN_MIN_VOCAB
    lean = lean and not (with_entropy and mass_on is not None)
    chunks = []
    for start in range(0, B * T, max(1, chunk_size)):
        piece = slice(start, start + chunk_size)
        args = (head, flat[piece], flat_tokens[piece], temperature, with_entropy, mass_on)
        # non-reentrant: it tracks gradients to the head's parameters too (a LoRA on lm_head)
        if recompute and lean:
            chunks.append(
                _FrozenHeadChunk.apply(flat[piece], flat_tokens[piece], temperature, with_entropy, mass_on, head)
            )
        elif recompute:
            chunks.append(checkpoint(_chunk_stats, *args, use_reentrant=False))
        else:
            chunks.append(_chunk_stats(*args))
    width = 1 + with_entropy + (mass_on is not None)
    stats = torch.cat(chunks).reshape(B, T, width) if chunks else hidden.new_zeros(B, T, width, dtype=torch.float32)
    return TokenStats(
        stats[..., 0], stats[..., 1] if with_entropy else None, stats[..., -1] if mass_on is not None else None
    )


def hidden_logprobs(
    hidden: torch.Tensor,
    head,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = LOGITS_CHUNK_SIZE,
    with_entropy: bool = False,
):
    """(log-probs [B, T], entropy [B, T] or None) of `tokens` [B, T]: `hidden_token_stats` without the log-mass."""
    stats = hidden_token_stats(hidden, head, tokens, temperature, chunk_size, with_entropy)
    return stats.logprobs, stats.entropy


def response_logprobs_from_hidden(
    hidden: torch.Tensor,
    head,
    responses: torch.Tensor,
    prompt_width: int,
    temperature: float,
    chunk_size: int = LOGITS_CHUNK_SIZE,
    with_entropy: bool = False,
):
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


def score_tokens(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: int | torch.Tensor,
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = LOGITS_CHUNK_SIZE,
    with_entropy: bool = False,
    mass_on: torch.Tensor | None = None,
    keep_hidden: bool = False,
) -> TokenStats:
    """`TokenStats` of the tokens a causal LM predicts at `positions`, from one trunk pass and the LM head on those
    positions only, `chunk_size` at a time: the [B, S, V] logits never exist. Every stage that scores its
    own tokens (PPO, DPO, eval) goes through here.

    input_ids/attention_mask [B, S]; positions: the prompt width P (the response `input_ids[:, P:]`, stats
    [B, S - P]) or a bool mask [B, S - 1] (position t predicts input_ids[:, t + 1]; stats [B, S - 1], 0 elsewhere);
    position_ids: as given (None: the model's own). Models the trunk and head alone cannot score (`chunkable`) take
    their full logits, a few rows at a time.
    """
    response = isinstance(positions, int)
    tokens = input_ids[:, positions:] if response else input_ids[:, 1:][positions].unsqueeze(0)
    args = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    hidden = None
    if chunkable(model):
        trunk, head = trunk_and_head(model)
        hidden = trunk(**args).last_hidden_state
        picked = hidden[:, positions - 1 : -1] if response else hidden[:, :-1][positions].unsqueeze(0)
        stats = hidden_token_stats(picked, head, tokens, temperature, chunk_size, with_entropy, mass_on)
    else:
        logits = model(**args).logits[:, -input_ids.shape[1] :]  # prompt tuning's virtual tokens come first
        picked = logits[:, positions - 1 : -1] if response else logits[:, :-1][positions].unsqueeze(0)
        stats = _stats_from_logits(picked, tokens, temperature, with_entropy, mass_on)
        if keep_hidden:
            hidden = trunk_and_head(model)[0](**args).last_hidden_state
    if not response:  # back to [B, S - 1]
        stats = TokenStats(*(None if x is None else _place(positions, x[0]) for x in stats[:3]))
    return stats._replace(hidden=hidden if keep_hidden else None)


def _stats_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float, with_entropy: bool, mass_on: torch.Tensor | None
) -> TokenStats:
    """`TokenStats` from logits [B, T, V] that exist already, a few rows at a time."""
    entropy = entropy_from_logits(logits, temperature) if with_entropy else None
    mass = None
    if mass_on is not None:
        mass_on = mass_on.to(logits.device)
        rows = [
            _chunk_stats(torch.nn.Identity(), r, t, temperature, False, mass_on)[..., -1]
            for r, t in zip(_chunks(logits), _chunks(tokens, logits))
        ]
        mass = torch.cat(rows)
    return TokenStats(logprobs_from_logits(logits, tokens, temperature), entropy, mass)


def _place(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """values [n] at the True positions of mask [B, T] (row-major, as `x[mask]` reads them), 0 elsewhere."""
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


def policy_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = LOGITS_CHUNK_SIZE,
    with_entropy: bool = False,
):
    """(log-probs [B, T], entropy [B, T] or None) of the response tokens `input_ids[:, P:]` under a causal LM.

    The drop-in for `response_logprobs(model(...).logits, ...)` (`score_tokens` at the prompt width); position_ids
    default to counting real tokens (as generation numbers left-padded rows).
    """
    position_ids = position_ids_from_mask(attention_mask) if position_ids is None else position_ids
    stats = score_tokens(
        model, input_ids, attention_mask, prompt_width, temperature, position_ids, chunk_size, with_entropy
    )
    return stats.logprobs, stats.entropy


def policy_sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    mask: torch.Tensor,
    prompt_width: int,
    temperature: float = 1.0,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = LOGITS_CHUNK_SIZE,
) -> torch.Tensor:
    """The drop-in for `sequence_logprobs(model(...).logits, ...)`: sum over real response tokens (mask [B, T])
    of log p(y_t | x, y_<t), [B] float64, without the [B, S, V] logits."""
    logprobs, _ = policy_logprobs(model, input_ids, attention_mask, prompt_width, temperature, position_ids, chunk_size)
    return (logprobs.double() * mask).sum(-1)


class TokenScorer(torch.nn.Module):
    """A causal LM whose forward is `score_tokens`: what a stage hands to Accelerate when it trains on its own
    tokens' log-probs, so the training pass runs through the DDP/DeepSpeed wrapper (gradient sync, ZeRO-3
    gathering) without the [B, S, V] logits. Everything else (generate, disable_adapter, config, ...) is the
    model's own; it saves as the model saves."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids,
        attention_mask,
        positions,
        temperature: float = 1.0,
        position_ids=None,
        chunk_size: int = LOGITS_CHUNK_SIZE,
        with_entropy: bool = False,
        mass_on=None,
    ) -> TokenStats:
        return score_tokens(
            self.model,
            input_ids,
            attention_mask,
            positions,
            temperature,
            position_ids,
            chunk_size,
            with_entropy,
            mass_on,
        )

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def save_pretrained(self, folder: str, state_dict: dict | None = None, **kwargs) -> None:
        """The model's own `save_pretrained`; a state dict of this wrapper (e.g. gathered from ZeRO-3) loses the
        `model.` prefix of its keys first."""
        if state_dict is not None:
            state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
        self.model.save_pretrained(folder, state_dict=state_dict, **kwargs)
