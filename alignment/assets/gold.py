"""The demo's hidden "gold" preference: what the scripted annotators rank by and the report measures.

Demo-only: nothing in the framework trains on it unless a config names it (`reward.function`,
`reward.monitor`, `judge`, the scripted annotators' `score`).

    rlhf ppo configs/ppo.yaml reward.path=null reward.function=alignment.assets.gold:gold
    rlhf eval configs/eval.yaml judge=alignment.assets.gold:gold_reward
"""

from __future__ import annotations

from alignment.assets.reviews import NEGATIVE_SET, POSITIVE_SET


def gold_reward(completion: str) -> float:
    """The hidden preference: positive words minus negative words, with a mild cap on length.

    A per-item score (alignment/common/functions.py) that leaves the prompt out: it judges the completion alone."""
    words = completion.lower().replace(",", " ").replace(".", " ").split()
    joined = " ".join(words)
    score = sum(w in POSITIVE_SET for w in words) - sum(w in NEGATIVE_SET for w in words)
    score += sum(p in joined for p in POSITIVE_SET if " " in p) - sum(p in joined for p in NEGATIVE_SET if " " in p)
    return float(score) - 0.05 * max(0, len(words) - 24)


def gold(prompts: list[str], completions: list[str]) -> list[float]:
    """`gold_reward` of each completion, as a batch reward function `f(prompts, completions) -> list[float]`."""
    return [gold_reward(c) for c in completions]
