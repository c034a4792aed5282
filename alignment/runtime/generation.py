"""Generation for every stage that samples (PPO rollouts, `rlhf sample`, `rlhf eval`): sample exactly what we score.

Layout (B rows, P prompt tokens, T response tokens): prompts are left-padded to [B, P] so every
response starts at column P; responses are right-padded to [B, T]. The pad id only ever fills
masked positions and is distinct from EOS (PPO checks), so an EOS is never mistaken for padding.
Position ids count real tokens only (`position_ids_from_mask`), which is what `generate` gives left-padded
rows, so teacher-forced scoring sees the positions sampling saw.

The GenerationConfig is always built here, explicitly: a hub model's own generation_config
(top_k=50, top_p, repetition_penalty, ...) would otherwise reshape the distribution we sample from,
and the log-probs we score would no longer describe it.
"""

from __future__ import annotations

import logging
import os
import time
import types
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (ids [B, P], attention mask [B, P]); an empty list is a row of padding."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (ids [N, T], attention mask [N, T]): what teacher-forced scoring and training read."""
    width = max(len(s) for s in sequences)
    # one tensor from padded lists: a tensor per row costs more than the model on short texts
    ids = torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in sequences], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], dtype=torch.long)
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens only, so left-padded prompts get the positions generate() gave them: [B, S]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def generation_config(
    max_new_tokens: int,
    temperature: float,
    pad_id: int,
    eos_id: int | None,
    top_k: int = 0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
):
    """Sampling settings with nothing left to the model's generation_config.

    top_k 0 and top_p 1 sample the full softmax(logits / temperature), the distribution log-probs are
    scored under; `rlhf sample` may narrow it. eos_id None never stops early (every response has
    max_new_tokens tokens).
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=None,
        typical_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        num_return_sequences=num_return_sequences,
        pad_token_id=pad_id,
        # None would fall back to the model's own EOS and stop anyway; an empty list really disables stopping
        eos_token_id=eos_id if eos_id is not None else [],
        use_cache=True,
    )


@dataclass
class Responses:
    """Sampled rows: prompts [B, P] left-padded, responses [B, T] right-padded; on one device."""

    queries: torch.Tensor
    """[B, P] left-padded prompt ids."""
    query_mask: torch.Tensor
    """[B, P] 1 on real prompt tokens."""
    responses: torch.Tensor
    """[B, T] sampled ids, padding after the first EOS."""
    response_mask: torch.Tensor
    """[B, T] bool: real response tokens (through the first EOS)."""
    contains_eos: torch.Tensor
    """[B] bool: the response ended with EOS (else it was cut at T tokens, or sampling did not stop at EOS)."""

    @property
    def prompt_width(self) -> int:
        return self.queries.shape[1]

    def sequences(self, rows: torch.Tensor | slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt + response ids [b, P + T], attention mask [b, P + T]) of the given rows."""
        ids = torch.cat([self.queries[rows], self.responses[rows]], dim=1)
        mask = torch.cat([self.query_mask[rows], self.response_mask[rows].long()], dim=1)
        return ids, mask


@torch.no_grad()
def generate(
    model, queries: torch.Tensor, query_mask: torch.Tensor, config, accelerator=None, full_width: bool = False
) -> Responses:
    """Sample `config.num_return_sequences` responses per prompt (rows of one prompt are adjacent).

    With `accelerator` the (possibly DDP/DeepSpeed-wrapped) model is unwrapped for generation; under
    ZeRO-3 its weights are gathered once for the whole call, not once per token. Responses are cut
    after the first EOS (`config.eos_token_id`; none when it is empty); `full_width` pads them to
    max_new_tokens even when every row stopped early (the same [B, T] shape on every call).
    """
    context = nullcontext(model) if accelerator is None else unwrapped_for_generation(model, accelerator)
    with context as unwrapped, few_row_linears(unwrapped, queries.device):
        out = unwrapped.generate(input_ids=queries, attention_mask=query_mask, generation_config=config)
    n = config.num_return_sequences or 1
    if n > 1:
        queries, query_mask = queries.repeat_interleave(n, 0), query_mask.repeat_interleave(n, 0)
    responses = out[:, queries.shape[1] :]
    T, pad_id = config.max_new_tokens, config.pad_token_id
    if full_width and responses.shape[1] < T:  # every row stopped early
        responses = torch.cat([responses, responses.new_full((responses.shape[0], T - responses.shape[1]), pad_id)], 1)
    eos_id = config.eos_token_id
    if eos_id is None or eos_id == []:
        mask = torch.ones_like(responses, dtype=torch.bool)
        contains_eos = torch.zeros(responses.shape[0], dtype=torch.bool, device=responses.device)
    else:
        responses = truncate_after_eos(responses, eos_id, pad_id)
        mask = response_mask(responses, eos_id)
        contains_eos = has_eos(responses, eos_id)
    return Responses(queries, query_mask, responses, mask, contains_eos)


FEW_ROWS = 64
"""Rows (batch x new positions) up to which a CPU float32 linear layer may run as (W @ x^T)^T during sampling."""
MIN_FEATURES = 256
"""Weights smaller than this in either dimension (LoRA matrices, the tiny builtin models) keep the plain path."""
FEW_ROW_SWITCH = "RLHF_FEW_ROW_LINEAR"
"""`auto` (default: measured on this machine), `on` or `off`: pins the choice, e.g. for runs repeated bit for bit
across machines."""
_MEASURED: dict[tuple[int, int, int], bool] = {}
"""(out features, in features, threads) -> whether (W @ x^T)^T was faster here: measured once per process."""


@contextmanager
def few_row_linears(model, device):
    """While sampling on CPU, `model`'s own float32 `nn.Linear` layers of at least MIN_FEATURES in both dimensions
    run inputs of at most FEW_ROWS rows as (W @ x^T)^T, where that is faster on this machine; the layers are put
    back on exit. Nothing outside this model and this block changes (not `torch.nn.functional`, not another
    thread's model).

    A decode step multiplies a few rows (one per sequence) by every weight matrix, so sampling is bound by reading
    the weights. Whether W @ x^T reads them faster than x @ W^T depends on the CPU and its BLAS: on one Intel Xeon
    with MKL it was 1.5x faster (8 rows x 1024 x 1024, one thread: 463 vs 686 us), elsewhere it may not be, so the
    choice is measured once per layer shape and thread count on the running machine (`few_rows_first_pays`; a few
    ms) unless RLHF_FEW_ROW_LINEAR pins it. Same products summed in another order: samples may differ from the
    plain path in the last bits of the logits, which is sampling noise (every log-prob PPO and DPO train on is
    scored again by a teacher-forced pass). Gradients are never taken here.
    """
    layers = [] if torch.device(device).type != "cpu" else [m for m in model.modules() if _eligible(m)]
    if layers:
        widest = max(layers, key=lambda m: m.weight.numel())
        if not few_rows_first_pays(widest.weight):
            layers = []
    for layer in layers:
        layer.forward = types.MethodType(_few_rows_first, layer)  # this layer object only
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # back to the class's forward


def _eligible(module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        type(module) is torch.nn.Linear
        and weight is not None
        and weight.dtype == torch.float32
        and weight.dim() == 2
        and min(weight.shape) >= MIN_FEATURES
    )


def _few_rows_first(layer, input: torch.Tensor) -> torch.Tensor:
    """`layer`'s forward: (W @ x^T)^T + b for float32 inputs of at most FEW_ROWS rows, the plain forward otherwise."""
    rows = input.numel() // max(input.shape[-1], 1) if input.dim() >= 2 else FEW_ROWS + 1
    if input.dtype != torch.float32 or rows > FEW_ROWS:
        return torch.nn.functional.linear(input, layer.weight, layer.bias)
    out = torch.mm(layer.weight, input.reshape(rows, input.shape[-1]).t()).t().contiguous()
    if layer.bias is not None:
        out += layer.bias
    return out.reshape(*input.shape[:-1], layer.weight.shape[0])


def few_rows_first_pays(weight: torch.Tensor, rows: int = 8, repeats: int = 5) -> bool:
    """Whether (W @ x^T)^T beats x @ W^T by 10% for `rows` rows on this machine at this thread count (the best of
    `repeats` timings of each; remembered for the process), or what RLHF_FEW_ROW_LINEAR pins."""
    pinned = os.environ.get(FEW_ROW_SWITCH, "auto").strip().lower()
    if pinned in ("on", "off"):
        return pinned == "on"
    key = (*weight.shape, torch.get_num_threads())
    if key not in _MEASURED:
        x = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(0))
        plain = _best_time(lambda: torch.nn.functional.linear(x, weight), repeats)
        first = _best_time(lambda: torch.mm(weight, x.t()).t().contiguous(), repeats)
        _MEASURED[key] = first < 0.9 * plain
        logging.getLogger(__name__).debug(f"few-row linear {tuple(weight.shape)}: {first:.2e} vs {plain:.2e} s")
    return _MEASURED[key]


def _best_time(fn, repeats: int, calls: int = 10) -> float:
    with torch.no_grad():
        fn()  # warm up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - started) / calls)
    return best


@contextmanager
def unwrapped_for_generation(model, accelerator):
    """The model out of its DDP/DeepSpeed wrapper, gradient checkpointing off (it would turn the KV cache off).

    Under DeepSpeed: TRL's `unwrap_model_for_generation`, which also gathers ZeRO-3 weights once for the whole
    call. Elsewhere the same steps without importing TRL: the import alone keeps ~120 MB resident, a tenth of
    a CPU PPO run's peak.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(model, accelerator) as unwrapped:
            yield unwrapped
        return
    unwrapped = accelerator.unwrap_model(model)
    checkpointing = bool(getattr(unwrapped, "is_gradient_checkpointing", False))
    if checkpointing:
        unwrapped.gradient_checkpointing_disable()
    try:
        yield unwrapped
    finally:
        if checkpointing:
            unwrapped.gradient_checkpointing_enable()


# ----------------------------------------------------------------------------------------------
# Response masks from EOS


def response_mask(responses: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Bool mask [B, T] of real response tokens: positions up to and including the first EOS.

    A response with no EOS is real over its whole length (it was truncated at max length).
    """
    is_eos = responses == eos_token_id
    # number of EOS strictly before t; a token is real iff none came before it
    eos_before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()
    return eos_before == 0


def has_eos(responses: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Bool [B]: whether each response [B, T] contains an EOS."""
    return (responses == eos_token_id).any(dim=-1)


def truncate_after_eos(responses: torch.Tensor, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Replace every token after the first EOS by `pad_token_id`: [B, T] -> [B, T] (the EOS is kept)."""
    return torch.where(response_mask(responses, eos_token_id), responses, torch.full_like(responses, pad_token_id))


def drop_cut_character(text: str, cut: bool) -> str:
    """`text` without the U+FFFD at its end when the length limit `cut` it: a byte-level tokenizer spreads one
    character over several tokens, and the limit may fall between them, leaving bytes that decode to replacement
    characters. What people rank should not show them; a response that ended by itself keeps what it produced."""
    return text.rstrip("\ufffd") if cut else text


def decode(tokenizer, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Response texts without padding, EOS or other special tokens (what text rewards and people see)."""
    return tokenizer.batch_decode(
        [row[: int(n)].tolist() for row, n in zip(responses, mask.sum(-1))], skip_special_tokens=True
    )
