"""Whether a ranking carries a preference: the one rule every stage that reads or writes rankings applies.

The reward stage and DPO (reward/data.py) drop or refuse training rows without one, the importer skips
such tasks, the export counts them. Pure Python (no torch), so the ranking app's commands can use it.

A ranking carries no preference when
- its completions are all the same text (chosen == rejected: a pair the loss can only score 0.693 on), or
- two of its completions are the same text ranked apart (the label contradicts itself), or
- no two different texts are ranked apart (every completion tied), unless the loss models ties.
"""

from __future__ import annotations

import json

from alignment.common.errors import UserError

IDENTICAL = "identical"
"""Reason: the same text twice, ranked apart (or every completion the same text)."""
TIED = "tied"
"""Reason: no two different texts ranked apart."""


MIN_SPREAD = 0.1
"""A reward model whose scores spread under this (log-odds) prefers no completion to another more than ~54%: it has
learned no preference. The reward stage warns under it, and the policy stages' `reward.min_std` defaults to it, so
they never scale such a model up more than 10x."""


def text_key(completion) -> str:
    """What two completions are compared by: the text without surrounding whitespace (messages as JSON)."""
    return completion.strip() if isinstance(completion, str) else json.dumps(completion, sort_keys=True)


def check_ranks(ranks, n: int, where: str) -> list[int]:
    """`ranks` if it is one integer >= 1 per completion (1 = best, ties share a value), else a UserError."""
    if not isinstance(ranks, list) or len(ranks) != n:
        got = f"{len(ranks)} ranks" if isinstance(ranks, list) else f"'ranks' of type {type(ranks).__name__}"
        raise UserError(f"{where}: {got} for {n} completions")
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        raise UserError(f"{where}: ranks must be integers >= 1 (1 = best), got {ranks}")
    return ranks


def comparisons(completions: list, ranks: list[int], ties: str = "drop") -> int:
    """How many comparisons a ranking gives the loss: pairs of different texts ranked apart (or tied, when the
    loss models ties, i.e. `ties` is not `drop`)."""
    keys = [text_key(c) for c in completions]
    k = len(keys)
    return sum(
        keys[i] != keys[j] and (ranks[i] != ranks[j] or ties != "drop") for i in range(k) for j in range(i + 1, k)
    )


def no_preference(completions: list, ranks: list[int], ties: str = "drop") -> tuple[str, str] | None:
    """(IDENTICAL or TIED, why in words) when the ranking carries no preference to learn from, else None."""
    keys = [text_key(c) for c in completions]
    if len(set(keys)) == 1:
        return IDENTICAL, "its completions are identical (chosen == rejected)"
    k = len(keys)
    for i in range(k):
        for j in range(i + 1, k):
            if keys[i] == keys[j] and ranks[i] != ranks[j]:
                return IDENTICAL, f"completions {i + 1} and {j + 1} are identical but ranked apart"
    if not comparisons(completions, ranks, ties):
        return TIED, "every completion is tied"
    return None


def distinct_and_nonempty(texts: list[str]) -> bool:
    """A task worth ranking: every completion a non-empty text, no two the same (`rlhf sample`'s rule)."""
    keys = [text_key(t) for t in texts]
    return all(keys) and len(set(keys)) == len(keys)
