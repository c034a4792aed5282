"""Rollout: sample responses from the policy, then score them (log-probs, reference log-probs, values).

The layout is the runtime's (`alignment.runtime.generation`): prompts left-padded to [B, P], responses
right-padded to [B, T], positions counting real tokens only, so teacher-forced scoring sees the
positions sampling saw. `logits[:, P - 1 + t]` predicts response token t; every log-prob is taken
under softmax(logits / temperature) with the sampling temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.runtime.formatting import encode_prompt
from alignment.runtime.generation import Responses, generate, generation_config


def encode_prompts(tokenizer, prompts: list, max_length: int) -> list[list[int]]:
    """Prompt ids as the policy sees them; long prompts keep their last `max_length` tokens."""
    return [encode_prompt(tokenizer, p)[-max_length:] for p in prompts]


def sample(
    accelerator,
    model,
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    response_length: int,
    temperature: float,
    pad_id: int,
    eos_id: int | None,
) -> Responses:
    """Sample one response per prompt from the policy with the KV cache (ZeRO-3: weights gathered once, here).

    eos_id None: no stopping, every response has T tokens (and none counts as ended with EOS).
    """
    config = generation_config(response_length, temperature, pad_id, eos_id)
    return generate(model, queries, query_mask, config, accelerator, full_width=True)


@dataclass
class Scores:
    """Per-token quantities of a rollout before any update, [B, T] unless noted (float32)."""

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor | None
    """None when scored without a value head."""
    entropy: torch.Tensor
    reward_scores: torch.Tensor | None
    """[B] from the reward adapter on the same base; None when a separate model or function scores."""


@torch.no_grad()
def score(
    model,
    rollout: Responses,
    order: torch.Tensor,
    micro_batch: int,
    temperature: float,
    with_reward: bool,
    with_values: bool = True,
    with_policy: bool = True,
    value_pass: bool = False,
) -> Scores:
    """Score every episode in micro-batches of `micro_batch` rows taken in `order`.

    `order` is the first PPO epoch's shuffle, so each micro-batch here has exactly the rows and shape of
    a training micro-batch: the first minibatch of every update then reproduces these log-probs bit for
    bit (ratio 1, approxkl 0), which batch-shape-dependent kernels would otherwise break. Log-probs and
    values come from the same call the training pass makes (`policy_logprobs`), so from the same kernels.
    `with_policy` False leaves log-probs and entropy at zero for the update's first forward pass to fill, and the
    values too unless `value_pass` scores them with a value adapter of its own.
    """
    B, T = rollout.responses.shape
    P = rollout.prompt_width
    device = rollout.responses.device
    out = {k: torch.zeros(B, T, device=device) for k in ("logprobs", "ref_logprobs", "entropy")}
    values = torch.zeros(B, T, device=device) if with_values else None
    rewards = torch.zeros(B, device=device) if with_reward else None
    for start in range(0, B, micro_batch):
        rows = order[start : start + micro_batch]
        ids, mask = rollout.sequences(rows)
        kw = {"prompt_width": P, "temperature": temperature, "with_entropy": True}
        if with_policy:
            # chunked over response positions: no [b, P + T, V] logits, the same call the training pass makes
            logprobs, entropy, v = model(ids, mask, role="policy_logprobs", with_values=with_values, **kw)
            out["logprobs"][rows], out["entropy"][rows] = logprobs, entropy
            if with_values:
                values[rows] = v.float()
        elif value_pass:
            values[rows] = model(ids, mask, role="value")[:, P - 1 : -1].float()
        out["ref_logprobs"][rows] = model(ids, mask, role="reference_logprobs", **kw)[0]
        if with_reward:
            rewards[rows] = model(ids, mask, role="reward").float()
    return Scores(**out, values=values, reward_scores=rewards)
