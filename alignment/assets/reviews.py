"""The embedded default world: short reviews whose words carry sentiment, length and topic.

Everything the offline demo needs comes from here: the text the tiny tokenizer is trained on, SFT
rows (mixed sentiment, so the SFT policy is neutral on average) and prompts for sampling and PPO.
The hidden "gold" preference the scripted annotators rank by is in `gold.py`. Deterministic for a given seed.
"""

from __future__ import annotations

import random

TOPICS = [
    "cafe",
    "hotel",
    "phone",
    "movie",
    "book",
    "pizza place",
    "bike shop",
    "museum",
    "train ride",
    "laptop",
    "bakery",
    "concert",
    "park",
    "gym",
    "restaurant",
    "game",
    "camera",
    "beach",
    "noodle bar",
    "library",
    "garden",
    "airline",
    "market",
    "theater",
]
NOUNS = ["food", "staff", "service", "room", "price", "music", "view", "screen", "story", "coffee", "seat", "sound"]
POSITIVE = ["great", "lovely", "good", "fresh", "friendly", "perfect", "tasty", "clean", "fast", "warm", "calm", "fun"]
NEGATIVE = ["bad", "awful", "slow", "dirty", "rude", "cold", "noisy", "bland", "broken", "late", "poor", "dull"]
INTENSIFIERS = ["very", "really", "quite", "so"]
OPENERS = ["i think", "honestly", "overall", "to be fair", "in short", "we found"]
CLOSERS = ["would go again", "will not return", "worth a visit", "not worth it", "ok for a day", "i may return"]

POSITIVE_SET = frozenset(POSITIVE) | {"would go again", "worth a visit"}
NEGATIVE_SET = frozenset(NEGATIVE) | {"will not return", "not worth it"}


def prompt_for(topic: str) -> str:
    return f"Review of the {topic}:"


def _clause(rng: random.Random, p_positive: float) -> str:
    adjective = rng.choice(POSITIVE if rng.random() < p_positive else NEGATIVE)
    noun = rng.choice(NOUNS)
    verb = "were" if noun == "staff" else "was"
    if rng.random() < 0.3:
        adjective = f"{rng.choice(INTENSIFIERS)} {adjective}"
    return f"the {noun} {verb} {adjective}"


def review(rng: random.Random, p_positive: float | None = None) -> str:
    """One review of 1-4 clauses; each clause positive with probability `p_positive`."""
    if p_positive is None:
        p_positive = rng.random()
    clauses = [_clause(rng, p_positive) for _ in range(rng.randint(1, 4))]
    text = " and ".join(clauses)
    if rng.random() < 0.5:
        text = f"{rng.choice(OPENERS)} {text}"
    if rng.random() < 0.5:
        good = rng.random() < p_positive
        text = f"{text}, {rng.choice(CLOSERS[0::2] if good else CLOSERS[1::2])}"
    return text + "."


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` prompt/completion rows over the training topics (every other topic is held out)."""
    rng = random.Random(seed)
    topics = train_topics()
    return [{"prompt": prompt_for(rng.choice(topics)), "completion": " " + review(rng)} for _ in range(n)]


def train_topics() -> list[str]:
    return TOPICS[0::2] + TOPICS[1::4]


def heldout_topics() -> list[str]:
    return [t for t in TOPICS if t not in train_topics()]


def prompts(split: str = "train") -> list[dict]:
    """Prompt rows for sampling/PPO (`train`) or evaluation (`test`, topics never seen in training)."""
    topics = train_topics() if split == "train" else heldout_topics()
    return [{"prompt": prompt_for(t)} for t in topics]


def corpus(n: int = 4000, seed: int = 1) -> list[str]:
    """Text the embedded tokenizer is trained on: prompts and reviews covering every word."""
    rng = random.Random(seed)
    lines = [prompt_for(t) for t in TOPICS]
    lines += [" ".join(group) for group in (POSITIVE, NEGATIVE, NOUNS, INTENSIFIERS, OPENERS, CLOSERS)]
    lines += [f"{prompt_for(rng.choice(TOPICS))} {review(rng)}" for _ in range(n)]
    return lines
