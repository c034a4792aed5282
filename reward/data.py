"""Preference rows -> rankings -> tokenized K-wise examples and padded batches.

Accepted rows (from files, `datasets` folders, hub ids via `load_rows`, or `builtin:reviews-rankings`):
- K-wise export: `{"prompt", "completions": [K], "ranks": [K ints, 1 = best, ties share], "annotator",
  "task_id", "meta"}` (annotator, task_id and meta optional), and optionally `scores` [K finite numbers]: a soft
  label in nats (Plackett-Luce with weights exp(scores), e.g. a judge's or reward model's scores; DPO trains on
  it, the reward stage on every pair's P(i beats j) = sigmoid(score_i - score_j)); with `scores`, `ranks` may be
  left out and must agree if given;
- TRL pairwise: `{"prompt", "chosen", "rejected"}`, strings or message lists, optional `margin` and
  `chosen_probability` (a soft label: P(chosen is better), in [0, 1]; both stages train on it); with no `prompt`
  column the prompt is the common prefix of chosen and rejected (TRL's implicit prompt).

A ranking is `{"prompt", "completions", "ranks", "annotator", "margin", "chosen_probability", "scores", "where"}`;
pairwise rows become K = 2 rankings (chosen_probability None: a hard label; always None for K-wise rows; scores
None unless a K-wise row has them). Malformed rows raise `UserError("file:row: ...")`.
"""

from __future__ import annotations

import json
import math
import os
import random

import torch

from alignment.common.data import is_finite_number, load_rows
from alignment.common.errors import UserError
from alignment.runtime.generation import right_pad
from reward import preference
from reward.model import encode_text
from reward.rankings import synthetic

BUILTIN = "builtin:reviews-rankings"
PROBABILITY = "chosen_probability"
SCORES = "scores"
WEIGHT = "annotator_weight"


def load_rankings(
    path: str, split: str = "train", limit: int | None = None, k: int | None = None, key: str = "data.path"
) -> list[dict]:
    """Rankings from `path` (see module docstring); `k` demands exactly K completions per row."""
    if path == BUILTIN:
        rows = synthetic.rankings(seed=0 if split == "train" else 1)
    else:
        rows = load_rows(path, split, key=key)
    rows = rows[:limit] if limit else rows
    return [to_ranking(row, f"{path}:{i + 1}", k) for i, row in enumerate(rows)]


def load_split(d, ties: str, seed: int, stage: str, log=None) -> tuple[list[dict], list[dict]]:
    """(train rankings, held-out rankings) for a stage's data config `d` (path, split, limit, k, eval_path,
    eval_split, test_size, unusable): eval_path if set, else a seeded split by prompt. Rankings that carry no
    preference (see reward/preference.py) are then dropped and counted, or refused with `d.unusable=error`."""
    rankings = load_rankings(d.path, d.split, d.limit, d.k)
    if d.eval_path:
        split = d.eval_split if os.path.isdir(d.eval_path) or d.eval_path.startswith("builtin:") else "train"
        held = load_rankings(d.eval_path, split, None, d.k, key="data.eval_path")
    else:  # split first, so the held-out prompts do not depend on which rows are dropped
        rankings, held = split_by_prompt(rankings, d.test_size, seed)
    train = drop_unusable(rankings, ties, d.unusable, "data.path", log, stage=stage)
    return train, drop_unusable(held, ties, d.unusable, "data.eval_path", log, required=False, stage=stage)


def comparisons(ranking: dict, ties: str = "drop") -> int:
    """How many comparisons a ranking gives the loss (reward/preference.py)."""
    return preference.comparisons(ranking["completions"], ranking["ranks"], ties)


def drop_unusable(
    rankings: list[dict], ties: str, mode: str, key: str, log=None, required: bool = True, stage: str = "reward"
) -> list[dict]:
    """The rankings that carry a preference. The others (identical texts, or all tied) are dropped and counted
    (`mode="drop"`, a warning) or the first is an error naming its row (`mode="error"`); nothing left is an error
    with the counts when `required` (training data), a warning otherwise (held-out data)."""
    kept, dropped = [], {preference.IDENTICAL: 0, preference.TIED: 0}
    for r in rankings:
        # a scored row's ties teach too: equal scores are a soft label ("as good as each other")
        soft = r.get("scores") is not None
        found = preference.no_preference(r["completions"], r["ranks"], "davidson" if soft else ties)
        if found is None:
            kept.append(r)
            continue
        if mode == "error":
            raise UserError(
                f"{r['where']}: no preference to learn from: {found[1]} (data.unusable=drop skips such rows)"
            )
        dropped[found[0]] += 1
    counts = (
        f"{dropped[preference.IDENTICAL]} with identical completions (chosen == rejected, or one text ranked apart "
        f"from itself), {dropped[preference.TIED]} with every completion tied"
    )
    if rankings and not kept and required:
        raise UserError(f"{key}: no usable comparison in {len(rankings)} rows ({counts})")
    if kept and required and not any(preference.comparisons(r["completions"], r["ranks"]) for r in kept):
        # ties (equal scores, or ranks under a tie model) teach only beside rows that prefer something
        raise UserError(
            f"{key}: no preference in {len(rankings)} rows: every row ties all its completions (equal scores or ranks)"
        )
    if sum(dropped.values()) and log is not None:
        n = sum(dropped.values())
        log.warning(f"{stage}: {key}: dropped {n} of {len(rankings)} rows without a preference ({counts})")
    return kept


def is_text(value) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
        and any(str(m["content"]).strip() for m in value)
    )


def to_ranking(row: dict, where: str, k: int | None = None) -> dict:
    """One row of either schema as a ranking, or a UserError naming `where` (file:row) and the fault."""
    if "completions" in row or "ranks" in row:
        prompt, completions, ranks, margin = _kwise(row, where)
    elif "chosen" in row or "rejected" in row:
        prompt, completions, ranks, margin = _pairwise(row, where)
    else:
        found = ", ".join(sorted(row)) or "none"
        raise UserError(
            f"{where}: expected 'prompt'+'completions'+'ranks' or 'chosen'+'rejected' columns, found: {found}"
        )
    if k is not None and len(completions) != k:
        what = "a chosen/rejected pair" if len(completions) == 2 and "chosen" in row else f"{len(completions)}"
        raise UserError(f"{where}: expected K={k} completions (data.k), got {what}")
    if prompt is None or not (isinstance(prompt, str) or is_text(prompt)):
        raise UserError(f"{where}: 'prompt' is missing or not a string/message list")
    if isinstance(prompt, list) and not all(isinstance(c, list) for c in completions):
        raise UserError(f"{where}: a message-list prompt needs message-list completions")
    return {
        "prompt": prompt,
        "completions": completions,
        "ranks": ranks,
        "annotator": str(row.get("annotator") or "unknown"),
        "margin": None if margin is None else float(margin),
        "chosen_probability": _chosen_probability(row, where),
        "scores": _scores(row, where),
        "weight": _annotator_weight(row, where),
        "where": where,
    }


def _chosen_probability(row: dict, where: str) -> float | None:
    """The optional soft label of a pairwise row (None if absent), checked to be a number in [0, 1]."""
    p = row.get(PROBABILITY)
    if p is None:
        return None
    if "completions" in row:
        raise UserError(f"{where}: '{PROBABILITY}' is a pairwise (chosen/rejected) column, not a K-wise one")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise UserError(f"{where}: '{PROBABILITY}' must be a number in [0, 1], got {p!r}")
    return float(p)


def _scores(row: dict, where: str) -> list[float] | None:
    """The optional soft label of a K-wise row (None if absent): one finite number per completion."""
    scores = row.get(SCORES)
    if scores is None:
        return None
    if "completions" not in row:
        raise UserError(f"{where}: '{SCORES}' is a K-wise (completions) column; a pair's soft label is '{PROBABILITY}'")
    n = len(row["completions"])
    if not isinstance(scores, list) or len(scores) != n or not all(is_finite_number(x) for x in scores):
        raise UserError(f"{where}: '{SCORES}' must be a list of {n} finite numbers, one per completion")
    return [float(x) for x in scores]


def ranks_from_scores(scores: list[float]) -> list[int]:
    """Competition ranks of scores, highest first (1 = best; equal scores share a rank): [0.5, 2, 0.5] -> [2, 1, 2]."""
    return [1 + sum(other > x for other in scores) for x in scores]


def _annotator_weight(row: dict, where: str) -> float | None:
    """The row's `annotator_weight` (the export's reliability estimate; None if absent), a finite number >= 0."""
    w = row.get(WEIGHT)
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < float("inf"):
        raise UserError(f"{where}: '{WEIGHT}' must be a finite number >= 0, got {w!r}")
    return float(w)


def apply_annotator_weights(rankings: list[dict], mode: str, key: str = "data.path") -> list[dict]:
    """Each ranking's loss weight: 1 (`equal`), or its row's `annotator_weight` scaled to mean 1 over these rankings
    (`estimated`: the loss keeps its scale, and a careless annotator's rows weigh about 0)."""
    if mode == "equal":
        return [{**r, "weight": 1.0} for r in rankings]
    missing = next((r for r in rankings if r.get("weight") is None), None)
    if missing is not None:
        raise UserError(
            f"{missing['where']}: no '{WEIGHT}' column for data.annotator_weights=estimated "
            "(export with `rlhf rank export` (annotator_weights=true), or use data.annotator_weights=equal)"
        )
    mean = sum(r["weight"] for r in rankings) / max(len(rankings), 1)
    if rankings and mean <= 0:
        raise UserError(f"{key}: every '{WEIGHT}' is 0: no ranking would train")
    return [{**r, "weight": r["weight"] / mean} for r in rankings]


def _kwise(row: dict, where: str) -> tuple:
    """(prompt, completions, ranks, no margin) of a K-wise row, checked."""
    completions, ranks = row.get("completions"), row.get("ranks")
    scores = _scores(row, where) if isinstance(completions, list) else None
    if scores is not None and ranks is None:
        ranks = ranks_from_scores(scores)
    elif scores is not None and isinstance(ranks, list):
        _check_ranks_agree(ranks, scores, where)
    if not isinstance(completions, list) or not isinstance(ranks, list):
        raise UserError(f"{where}: 'completions' and 'ranks' must both be lists")
    if len(completions) < 2:
        raise UserError(f"{where}: needs at least 2 completions to rank, got {len(completions)}")
    preference.check_ranks(ranks, len(completions), where)
    for i, c in enumerate(completions):
        if not is_text(c):
            raise UserError(f"{where}: completion {i + 1} is empty or not a string/message list")
    return row.get("prompt"), completions, ranks, None


def _check_ranks_agree(ranks: list, scores: list[float], where: str) -> None:
    """A row with both: every pair of completions in the same order (or tie) by its ranks as by its scores."""
    preference.check_ranks(ranks, len(scores), where)
    implied = ranks_from_scores(scores)
    for i in range(len(ranks)):
        for j in range(i + 1, len(ranks)):
            if (ranks[i] > ranks[j]) - (ranks[i] < ranks[j]) != (implied[i] > implied[j]) - (implied[i] < implied[j]):
                raise UserError(
                    f"{where}: 'ranks' and '{SCORES}' disagree on completions {i + 1} and {j + 1} "
                    f"(ranks {ranks[i]}, {ranks[j]}; scores {scores[i]:g}, {scores[j]:g}); leave 'ranks' out to use the scores' order"
                )


def _pairwise(row: dict, where: str) -> tuple:
    """(prompt, [chosen, rejected], [1, 2], margin) of a TRL pairwise row, checked; implicit prompts split off."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not is_text(value):
            raise UserError(f"{where}: '{name}' is missing, empty, or not a string/message list")
    if type(chosen) is not type(rejected):
        raise UserError(f"{where}: 'chosen' and 'rejected' must both be strings or both message lists")
    if "prompt" in row:
        prompt = row["prompt"]
    else:
        prompt, chosen, rejected = implicit_prompt(chosen, rejected)
    margin = row.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
        raise UserError(f"{where}: 'margin' must be a number, got {margin!r}")
    return prompt, [chosen, rejected], [1, 2], margin


def implicit_prompt(chosen, rejected):
    """(prompt, chosen rest, rejected rest): the shared leading messages, or for strings the common prefix
    cut back to a whitespace so no word is split between prompt and completion."""
    if isinstance(chosen, list):
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        return chosen[:n], chosen[n:], rejected[n:]
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    cut = max(chosen.rfind(" ", 0, n + 1), chosen.rfind("\n", 0, n + 1), 0)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def split_by_prompt(rankings: list[dict], test_size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded share (<1) or count (>=1) of distinct prompts, never in both."""
    keys = sorted({prompt_key(r["prompt"]) for r in rankings})
    if test_size <= 0 or len(keys) < 2:
        return rankings, []
    n_test = round(test_size * len(keys)) if test_size < 1 else int(test_size)
    n_test = min(max(n_test, 1), len(keys) - 1)
    random.Random(seed).shuffle(keys)
    held = set(keys[:n_test])
    return (
        [r for r in rankings if prompt_key(r["prompt"]) not in held],
        [r for r in rankings if prompt_key(r["prompt"]) in held],
    )


def encode(tokenizer, ranking: dict, max_length: int) -> dict:
    """A K-wise example: `input_ids` [K token lists], `lengths` [K completion tokens], ranks, margin, annotator."""
    try:
        encoded = [encode_text(tokenizer, ranking["prompt"], c, max_length) for c in ranking["completions"]]
    except UserError as e:
        raise UserError(f"{ranking['where']}: {e}") from None
    return {
        "input_ids": [ids for ids, _ in encoded],
        "lengths": [n for _, n in encoded],
        "ranks": list(ranking["ranks"]),
        "margin": ranking["margin"],
        "annotator": ranking["annotator"],
        "weight": 1.0 if ranking.get("weight") is None else ranking["weight"],
        "pair_probabilities": pair_probabilities(ranking),
    }


def pair_probabilities(ranking: dict) -> list[list[float]] | None:
    """A soft-labelled ranking's [K, K] P(i beats j): sigmoid(score_i - score_j) from `scores`, or the pair's
    `chosen_probability` (completion 0 is chosen); None for a hard label (ranks only)."""
    scores = ranking.get("scores")
    if scores is not None:
        # tanh form: sigmoid without overflow for scores far apart
        return [[0.5 * (1 + math.tanh((a - b) / 2)) for b in scores] for a in scores]
    p = ranking.get("chosen_probability")
    return None if p is None else [[0.5, p], [1 - p, 0.5]]


def collate(examples: list[dict], pad_id: int, weights: list[float] | None = None) -> dict:
    """One flat forward batch for all completions of all prompts, and the [B, K] layout to score them in.

    input_ids/attention_mask: [N, T] with N = sum of K over examples (no padding completions);
    slot: [N] position of each row in the flattened [B * K_max] score grid; ranks/valid: [B, K_max];
    margins: [B, K_max, K_max] from the rows' given margins (0 where none). weights (0 marks a filler
    example in evaluation) zero a prompt's `valid` row so it counts nowhere. loss_weights [B]: each example's
    `weight` (its annotator's, data.annotator_weights; 1 when it has none). soft [B] marks the soft-labelled
    examples and soft_prob [B, K_max, K_max] their `pair_probabilities` (0 elsewhere).
    """
    k_max = max(len(e["input_ids"]) for e in examples)
    sequences, slot = [], []
    ranks = torch.ones(len(examples), k_max, dtype=torch.long)
    valid = torch.zeros(len(examples), k_max, dtype=torch.bool)
    margins = torch.zeros(len(examples), k_max, k_max)
    soft = torch.zeros(len(examples), dtype=torch.bool)
    soft_prob = torch.zeros(len(examples), k_max, k_max)
    for b, e in enumerate(examples):
        k = len(e["input_ids"])
        sequences += e["input_ids"]
        slot += [b * k_max + i for i in range(k)]
        ranks[b, :k] = torch.tensor(e["ranks"])
        valid[b, :k] = weights is None or weights[b] > 0
        if e["margin"] is not None:
            margins[b, 0, 1] = e["margin"]  # pairwise rows: completion 0 is chosen, 1 rejected
        if e.get("pair_probabilities") is not None:
            soft[b] = True
            soft_prob[b, :k, :k] = torch.tensor(e["pair_probabilities"])
    input_ids, attention_mask = right_pad(sequences, pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "slot": torch.tensor(slot, dtype=torch.long),
        "ranks": ranks,
        "valid": valid,
        "margins": margins,
        "loss_weights": torch.tensor([float(e.get("weight", 1.0)) for e in examples]),
        "soft": soft,
        "soft_prob": soft_prob,
    }


def to_grid(flat_scores: torch.Tensor, slot: torch.Tensor, batch: int, k_max: int) -> torch.Tensor:
    """Scatter per-completion scores [N] into the [B, K_max] grid (0 at padding slots)."""
    grid = flat_scores.new_zeros(batch * k_max)
    grid = grid.index_put((slot,), flat_scores)
    return grid.view(batch, k_max)
