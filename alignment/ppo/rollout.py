"""Rollout: sample responses from the policy, then score them (log-probs, reference log-probs, values).

Layout (B episodes, P prompt tokens, T response tokens): prompts are left-padded to [B, P] so every
response starts at column P; responses are right-padded to [B, T]. The pad id only ever fills
masked positions and is distinct from EOS, so an EOS is never mistaken for padding. Position ids
count real tokens only (`position_ids_from_mask`), which is what `generate` gave the left-padded
rows, so teacher-forced scoring sees the same positions as sampling did.

`logits[:, P - 1 + t]` predicts response token t; every log-prob is taken under
softmax(logits / temperature) with the sampling temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.ppo import losses as L
from alignment.runtime.formatting import encode_prompt


def encode_prompts(tokenizer, prompts: list, max_length: int) -> list[list[int]]:
    """Prompt ids as the policy sees them; long prompts keep their last `max_length` tokens."""
    return [encode_prompt(tokenizer, p)[-max_length:] for p in prompts]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into (ids [B, P], attention mask [B, P])."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


@dataclass
class Rollout:
    """One process's batch of episodes; tensors on the training device."""

    queries: torch.Tensor
    """[B, P] left-padded prompt ids."""
    query_mask: torch.Tensor
    """[B, P] 1 on real prompt tokens."""
    responses: torch.Tensor
    """[B, T] sampled ids, padding after the first EOS."""
    response_mask: torch.Tensor
    """[B, T] bool: real response tokens (through the first EOS)."""
    contains_eos: torch.Tensor
    """[B] bool: the response ended with EOS (else it was cut at T tokens)."""

    @property
    def prompt_width(self) -> int:
        return self.queries.shape[1]

    def sequences(self, rows: torch.Tensor | slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt + response ids [b, P + T], attention mask [b, P + T]) of the given rows."""
        ids = torch.cat([self.queries[rows], self.responses[rows]], dim=1)
        mask = torch.cat([self.query_mask[rows], self.response_mask[rows].long()], dim=1)
        return ids, mask


@torch.no_grad()
def sample(
    accelerator,
    model,
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    response_length: int,
    temperature: float,
    pad_id: int,
    eos_id: int | None,
) -> Rollout:
    """Sample one response per prompt with the KV cache; under ZeRO-3 the weights are gathered once, here.

    eos_id None: no stopping, every response has T tokens.
    """
    from transformers import GenerationConfig
    from trl.models.utils import unwrap_model_for_generation

    # An explicit config: a hub model's generation_config (top_k, top_p, repetition_penalty, ...) would
    # otherwise reshape the distribution we sample from, and the log-probs would no longer describe it.
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        min_p=None,
        typical_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=response_length,
        min_new_tokens=0,
        pad_token_id=pad_id,
        # None would fall back to the model's own EOS and stop anyway; an empty list really disables stopping
        eos_token_id=eos_id if eos_id is not None else [],
        use_cache=True,
    )
    with unwrap_model_for_generation(model, accelerator) as unwrapped:
        out = unwrapped.generate(queries, query_mask, generation_config=config)
    responses = out[:, queries.shape[1] :]
    if responses.shape[1] < response_length:  # every row stopped early
        fill = responses.new_full((responses.shape[0], response_length - responses.shape[1]), pad_id)
        responses = torch.cat([responses, fill], dim=1)
    if eos_id is None:
        mask = torch.ones_like(responses, dtype=torch.bool)
        contains_eos = torch.zeros(responses.shape[0], dtype=torch.bool, device=responses.device)
    else:
        responses = L.truncate_after_eos(responses, eos_id, pad_id)
        mask = L.response_mask(responses, eos_id)
        contains_eos = L.has_eos(responses, eos_id)
    return Rollout(queries, query_mask, responses, mask, contains_eos)


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, prompt_width: int, temperature: float):
    """Log-probs [b, T] of the response tokens from full-sequence logits [b, P + T, V]."""
    return L.logprobs_from_logits(logits[:, prompt_width - 1 : -1], responses, temperature)


@dataclass
class Scores:
    """Per-token quantities of a rollout before any update, [B, T] unless noted (float32)."""

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    reward_scores: torch.Tensor | None
    """[B] from the reward adapter on the same base; None when a separate model or function scores."""


@torch.no_grad()
def score(model, rollout: Rollout, order: torch.Tensor, micro_batch: int, temperature: float, with_reward: bool):
    """Score every episode in micro-batches of `micro_batch` rows taken in `order`.

    `order` is the first PPO epoch's shuffle, so each micro-batch here has exactly the rows and shape of
    a training micro-batch: the first minibatch of every update then reproduces these log-probs bit for
    bit (ratio 1, approxkl 0), which batch-shape-dependent kernels would otherwise break. The policy and
    values come from the same `policy_and_value` forward the training pass uses.
    """
    B, T = rollout.responses.shape
    P = rollout.prompt_width
    device = rollout.responses.device
    out = {k: torch.zeros(B, T, device=device) for k in ("logprobs", "ref_logprobs", "values", "entropy")}
    rewards = torch.zeros(B, device=device) if with_reward else None
    for start in range(0, B, micro_batch):
        rows = order[start : start + micro_batch]
        ids, mask = rollout.sequences(rows)
        responses = rollout.responses[rows]
        logits, values = model(ids, mask, role="policy_and_value")
        out["logprobs"][rows] = response_logprobs(logits, responses, P, temperature)
        out["entropy"][rows] = L.entropy_from_logits(logits[:, P - 1 : -1], temperature)
        out["values"][rows] = values[:, P - 1 : -1].float()
        del logits
        ref_logits = model(ids, mask, role="reference")
        out["ref_logprobs"][rows] = response_logprobs(ref_logits, responses, P, temperature)
        del ref_logits
        if with_reward:
            rewards[rows] = model(ids, mask, role="reward").float()
    return Scores(**out, reward_scores=rewards)
