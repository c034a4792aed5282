"""DPO's look at its own samples: DPO never samples while it trains, so a policy can win every held-out comparison
while its completions stop ending, break bytes or drift far from the reference. At each evaluation (and at the end)
the policy and, once, the reference sample completions of the same prompts with the same random numbers; their
health (alignment/runtime/health.py) and a Monte-Carlo KL to the reference are logged and watched by the guardrails.
"""

from __future__ import annotations

import torch
from accelerate.utils import gather_object

from alignment.runtime import generation, health
from alignment.runtime.generation import generate, generation_config, left_pad, position_ids_from_mask
from alignment.runtime.logprobs import policy_sequence_logprobs


def health_prompts(examples: list[dict], count: int) -> list[list[int]]:
    """Up to `count` prompt id lists: the distinct prompts of `examples`, each repeated until `count` are filled."""
    seen, prompts = set(), []
    for e in examples:
        ids = tuple(e["input_ids"][0][: e["prompt_length"]])
        if ids not in seen:
            seen.add(ids)
            prompts.append(list(ids))
    return [prompts[i % len(prompts)] for i in range(count)] if prompts else []


def longest_completion(examples: list[dict]) -> int:
    """Tokens of the longest completion (EOS included) in `examples`: the length limit the samples get."""
    return max(len(ids) - e["prompt_length"] for e in examples for ids in e["input_ids"])


@torch.no_grad()
def sample_health(
    accelerator,
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    cfg,
    seed: int,
    reference: bool = False,
) -> dict:
    """Sample each of `prompts` once (this process its share) with the policy, or with `reference` the adapter off,
    and return the health of every process's samples as `completions/*`, with the policy's `objective/kl`: the mean
    of log pi(y) - log pi_ref(y) over its own samples, both at the sampling temperature. The training RNG is left
    as it was (exact resume)."""
    peft_model = accelerator.unwrap_model(model)
    mine = prompts[accelerator.process_index :: accelerator.num_processes]
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rows = _sample(accelerator, model, peft_model, tokenizer, mine, max_new_tokens, cfg, reference)
    if was_training:
        model.train()
    rows = gather_object(rows) if accelerator.num_processes > 1 else rows
    texts, ended, lengths, kl = (list(column) for column in zip(*rows)) if rows else ([], [], [], [])
    measures = health.metric_names(health.completion_health(texts, ended, lengths, max_new_tokens))
    if not reference and kl:
        measures["objective/kl"] = sum(kl) / len(kl)
    return measures


def _sample(accelerator, model, peft_model, tokenizer, prompts, max_new_tokens: int, cfg, reference: bool) -> list:
    """(text, ended, length, log pi - log pi_ref) of one sample per prompt."""
    if not prompts:
        return []
    device, pad = accelerator.device, tokenizer.pad_token_id
    config = generation_config(max_new_tokens, cfg.temperature, pad, tokenizer.eos_token_id)
    queries, query_mask = left_pad(prompts, pad)
    queries, query_mask = queries.to(device), query_mask.to(device)
    if reference:
        with peft_model.disable_adapter():
            out = generate(model, queries, query_mask, config, accelerator)
    else:
        out = generate(model, queries, query_mask, config, accelerator)
    texts = generation.decode(tokenizer, out.responses, out.response_mask)
    lengths = out.response_mask.sum(-1).tolist()
    kl = [0.0] * len(prompts)
    if not reference:
        ids, attention = out.sequences()
        positions = position_ids_from_mask(attention)
        args = (ids, attention, out.response_mask, out.prompt_width, cfg.temperature, positions)
        logp = policy_sequence_logprobs(peft_model, *args)
        with peft_model.disable_adapter():
            ref = policy_sequence_logprobs(peft_model, *args)
        kl = (logp - ref).tolist()
    return list(zip(texts, out.contains_eos.tolist(), lengths, kl))


class Watch:
    """The guardrails of a DPO run: the reference's sample health once (`start`), the policy's at each evaluation
    (`look`), the chosen log-prob at each log (`check`); every process calls `start` and `look` (they sample)."""

    def __init__(self, cfg, run, model, tokenizer, examples: list[dict], seed: int):
        self.cfg, self.run, self.model, self.tokenizer, self.seed = cfg, run, model, tokenizer, seed
        world = run.accelerator.num_processes
        count = -(-cfg.samples // world) * world  # equal shares: under ZeRO-3 every process runs the same passes
        self.prompts = health_prompts(examples, count) if cfg.samples else []
        self.max_new_tokens = longest_completion(examples) if examples else 0
        self.guard = health.Guardrails(run.name, cfg, run.log, run.accelerator.is_main_process)

    def start(self) -> dict:
        """The reference's sample health (`reference/completions/*`), which the policy's is held against."""
        if not self.prompts:
            return {}
        measures = self._sample(reference=True)
        self.guard.check(measures, 0, len(self.prompts))
        return {f"reference/{k}": v for k, v in measures.items()}

    def look(self, step: int) -> dict:
        """The policy's sample health and KL to the reference at `step`, checked by the guardrails."""
        if not self.prompts:
            return {}
        measures = self._sample(reference=False)
        self.guard.check(measures, step, len(self.prompts))
        return measures

    def check(self, metrics: dict, step: int) -> None:
        self.guard.check({k: v for k, v in metrics.items() if k == "logps/chosen"}, step)

    def _sample(self, reference: bool) -> dict:
        return sample_health(
            self.run.accelerator,
            self.model,
            self.tokenizer,
            self.prompts,
            self.max_new_tokens,
            self.cfg,
            self.seed,
            reference,
        )
