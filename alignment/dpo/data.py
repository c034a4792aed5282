"""Preference rows -> rankings -> token ids with completion masks -> one flat forward batch per micro-batch.

Rows are read by reward/data.py (our K-wise export, TRL's pairwise format with strings or message lists,
an implicit prompt, an optional `chosen_probability` soft label, a K-wise row's optional `scores`), so both stages accept exactly the same
files and reject the same bad rows. The encoding is DPO's own, TRL's rules:
- the prompt as the policy sees it (chat template with the generation prompt for message lists), cut
  from the LEFT to `max_prompt_length` tokens (its end is what the completions continue);
- each completion tokenized on its own, EOS appended unless it already ends with EOS, then cut from the
  RIGHT to `max_completion_length` and to what `max_length` leaves after the prompt.
A completion's log-prob is taken over its own tokens only (`completion_mask`), never the prompt's.
"""

from __future__ import annotations

import torch

from alignment.common.errors import UserError
from alignment.dpo import losses
from alignment.runtime.formatting import encode_prompt
from reward import data as rdata
from reward.model import completion_text


def load_data(d, ties: str, seed: int, log=None) -> tuple[list[dict], list[dict]]:
    """(train rankings, held-out rankings) for a DPODataConfig `d`: eval_path if set, else a seeded split by
    prompt; rankings without a preference (chosen == rejected, all tied under ties=drop) dropped or refused
    (`d.unusable`), by the same rule as the reward stage; each training ranking's loss weight by
    `d.annotator_weights`."""
    train, held = rdata.load_split(d, ties, seed, "dpo", log)
    return rdata.apply_annotator_weights(train, d.annotator_weights), held


def encode_completion(tokenizer, completion, limit: int) -> list[int]:
    """Token ids of one completion: EOS appended unless already last, then the first `limit` ids kept."""
    ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    return ids[:limit]


def encode(tokenizer, ranking: dict, d) -> dict:
    """A ranking as token ids: `input_ids` [K lists: prompt + completion], `prompt_length`, ranks, soft label.

    d: the DPODataConfig (max_length, max_prompt_length, max_completion_length). Raises UserError naming
    the row when the prompt encodes to nothing (no token to predict the first completion token from).
    """
    where = ranking["where"]
    try:
        prompt_ids = encode_prompt(tokenizer, ranking["prompt"])[-d.max_prompt_length :]
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    if not prompt_ids:
        raise UserError(f"{where}: the prompt is empty and the tokenizer adds no BOS token to start from")
    room = d.max_length - len(prompt_ids)
    limit = min(room, d.max_completion_length) if d.max_completion_length else room
    completions = [encode_completion(tokenizer, c, limit) for c in ranking["completions"]]
    for i, ids in enumerate(completions):
        if not ids:
            raise UserError(f"{where}: completion {i + 1} encodes to no tokens")
    return {
        "input_ids": [prompt_ids + ids for ids in completions],
        "prompt_length": len(prompt_ids),
        "ranks": list(ranking["ranks"]),
        "chosen_probability": ranking.get("chosen_probability"),
        "scores": ranking.get("scores"),
        "margin": None,
        "weight": 1.0 if ranking.get("weight") is None else ranking["weight"],
    }


def check_plackett_luce(ranking: dict, ties: str) -> None:
    """Raise a UserError naming the row when the Plackett-Luce sums over tie orders would be too large: at most
    MAX_TIE_SUBSET tied completions (`drop`) or completions in all (`davidson`, which sums over every subset)."""
    ranks = ranking["ranks"]
    if ranking.get("scores") is not None and len(ranks) > losses.MAX_TIE_SUBSET:
        raise UserError(
            f"{ranking['where']}: {len(ranks)} scored completions; loss.type=plackett_luce sums a soft label over "
            f"orders of at most {losses.MAX_TIE_SUBSET} (use loss.type=sigmoid for this data)"
        )
    largest = len(ranks) if ties == "davidson" else max(ranks.count(r) for r in set(ranks))
    if largest > losses.MAX_TIE_SUBSET:
        what = "completions" if ties == "davidson" else "tied completions"
        raise UserError(
            f"{ranking['where']}: {largest} {what}; loss.type=plackett_luce with ties={ties} handles at most "
            f"{losses.MAX_TIE_SUBSET} (use loss.type=sigmoid for this data)"
        )


def is_informative(ranks: list[int], ties: str = "drop") -> bool:
    """Whether a prompt's ranking carries a preference the loss learns from: two distinct ranks, or with
    Davidson ties (which learns that tied completions are alike) any two completions."""
    return len(ranks) >= 2 if ties == "davidson" else len(set(ranks)) >= 2


def strict_pairs(ranks: list[int]) -> int:
    """Comparisons a ranking holds: its pairs of completions with different ranks (ties compare nothing)."""
    return sum(a != b for i, a in enumerate(ranks) for b in ranks[i + 1 :])


def comparisons(example: dict) -> int:
    """Comparisons an example gives the loss: every pair of a scored ranking (its soft label labels ties too),
    the strict pairs of a ranked one."""
    k = len(example["ranks"])
    return k * (k - 1) // 2 if example.get("scores") is not None else strict_pairs(example["ranks"])


def collate(examples: list[dict], pad_id: int, weights: list[float] | None = None) -> dict:
    """reward/data.py's flat batch (input_ids/attention_mask [N, T], slot [N], ranks/valid [B, K_max]) plus:

    completion_mask [N, T]: the completion tokens of each row; probability [B]: P(first completion is
    better) for soft-labelled pairs, 1 otherwise; hard [B]: the rows without that soft label; scores [B, K_max]
    and scored [B] (which rows have them) when any
    example carries `scores`; ref_logps [B, K_max] when every example carries
    precomputed reference log-probs (`ref_logps`, one per completion). weights 0 mark filler examples.
    """
    batch = rdata.collate(examples, pad_id, weights)
    starts = torch.tensor([e["prompt_length"] for e in examples for _ in e["input_ids"]])
    positions = torch.arange(batch["attention_mask"].shape[1])
    batch["completion_mask"] = batch["attention_mask"] * (positions[None, :] >= starts[:, None])
    p = [1.0 if e["chosen_probability"] is None else e["chosen_probability"] for e in examples]
    batch["probability"] = torch.tensor(p, dtype=torch.float64)
    batch["hard"] = torch.tensor([e["chosen_probability"] is None for e in examples])
    if any(e.get("scores") is not None for e in examples):
        batch["scores"] = torch.zeros(batch["ranks"].shape, dtype=torch.float64)
        batch["scored"] = torch.tensor([e.get("scores") is not None for e in examples])
        for b, e in enumerate(examples):
            if e.get("scores") is not None:
                batch["scores"][b, : len(e["scores"])] = torch.tensor(e["scores"], dtype=torch.float64)
    if all("ref_logps" in e for e in examples):
        ref = torch.zeros(batch["ranks"].shape)
        for b, e in enumerate(examples):
            ref[b, : len(e["ref_logps"])] = torch.tensor(e["ref_logps"])
        batch["ref_logps"] = ref
    return batch
