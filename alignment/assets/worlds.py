"""A family of worlds: the demo's reviews and six more, each a pretrained tiny base, SFT data, prompts, a hidden gold
preference and scripted annotators, all generated offline from a seed and the embedded word lists.

    rlhf demo world=recipes_format            # the whole pipeline on one world
    python benchmarks/worlds.py               # every method on every world, with the shipped defaults

What varies is what a method's defaults must survive: the kind of gold (word counts, an interaction of two
features, a format rule, relevance to the prompt, a length target, many small weights), the annotators' noise
(Plackett-Luce temperature 0.5-2, a careless annotator who ranks at random), K (2-6), prompt length (a title, a
chat with a system message), response length (5-40 words) and the vocabulary (another domain, another size).
No setting of any stage is tuned per world: a world only says what a user would know of their own data (its
lengths, its K, who ranks).

Names, for world W: the base `builtin:tiny-llama@W` (reviews: also `builtin:tiny-llama`), the data
`builtin:W-sft` and `builtin:W-prompts` (split `train`, or `test`: topics no stage trains on), the gold
`alignment.assets.golds:W.gold_reward` (per completion, for judges and annotators) and
`alignment.assets.golds:W.gold` (a batch `f(prompts, completions)`, for `reward.function` / `reward.monitor`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from alignment.assets import domains, gold, reviews
from alignment.assets.domains import Domain


def prompt_string(prompt) -> str:
    """A prompt as plain lower-case text: a string as is, a chat's messages joined."""
    if isinstance(prompt, (list, tuple)):
        return " ".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict)).lower()
    return str(prompt or "").lower()


def words_of(text: str) -> list[str]:
    return text.lower().replace(",", " ").replace(".", " ").split()


def find_in(text: str, names: list[str]) -> str | None:
    """The longest of `names` that occurs in `text` as whole words, or None."""
    for name in sorted(names, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", text):
            return name
    return None


# ----------------------------------------------------------------------------------------------
# Gold preferences: (prompt text, completion) -> float


def reviews_gold(prompt: str, text: str) -> float:
    """Word counts: positive words minus negative words, a mild cap on length (the demo's gold)."""
    return gold.gold_reward(text)


PRAISED = {"food", "staff", "service", "music", "view", "coffee"}
"""reviews_contrast: the critic wants these praised and every other aspect criticised."""


def contrast_gold(prompt: str, text: str) -> float:
    """An interaction of two features: each clause's sentiment counts 1.5 times on a praised aspect (the food) and
    -0.5 times on the others (the price), so what a positive word is worth depends on the noun beside it."""
    score = 0.0
    for clause in re.split(r",| and ", text.lower()):
        words = words_of(clause)
        noun = next((w for w in words if w in reviews.NOUNS), None)
        if noun is None:
            continue
        polarity = sum(w in reviews.POSITIVE for w in words) - sum(w in reviews.NEGATIVE for w in words)
        score += 1.5 * polarity if noun in PRAISED else -0.5 * polarity
    return score - 0.05 * max(0, len(words_of(text)) - 24)


def format_gold(prompt: str, text: str) -> float:
    """A format rule: start with "first" (+2), three steps (+2, and -0.6 per step more or fewer), end with "serve it
    warm" (+2)."""
    t = text.strip().lower().rstrip(".")
    steps = sum(w in domains.VERBS for w in words_of(t))
    rules = float(t.startswith("first")) + float(t.endswith("serve it warm")) + float(steps == 3)
    return 2 * rules - 0.6 * abs(steps - 3)


NO_INGREDIENT = -2.0
"""recipes_relevance: an answer that names no ingredient at all (an empty one included) says nothing about the dish,
and scores as four wrong ingredients would. Without it, silence (0) outranked the 58% of SFT's recipes that name more
wrong ingredients than right ones, and PPO, RLOO and GRPO learnt to answer with nothing: a gold no reader holds."""


def relevance_gold(prompt: str, text: str) -> float:
    """Relevance to the prompt: +1 for each ingredient of the dish asked for, -0.5 for any other ingredient, and
    NO_INGREDIENT for an answer that names none."""
    dish = find_in(prompt, domains.DISHES)
    own = set(domains.dish_ingredients(dish)) if dish else set()
    named = [w for w in words_of(text) if w in domains.INGREDIENTS]
    return sum(1.0 if w in own else -0.5 for w in named) if named else NO_INGREDIENT


LENGTH_TARGET = 14
"""weather_length: the words a report should have."""


def length_gold(prompt: str, text: str) -> float:
    """A length target: a quarter point lost per word away from LENGTH_TARGET."""
    return -0.25 * abs(len(words_of(text)) - LENGTH_TARGET)


def support_gold(prompt: str, text: str) -> float:
    """Relevance and manners: the customer's own device named (+1), each step that addresses their problem (+1, any
    other step -0.5), a polite sign-off (+0.5), a rude one (-2)."""
    device, problem = find_in(prompt, domains.DEVICES), find_in(prompt, list(domains.PROBLEMS))
    t = text.lower()
    score = 1.0 if device and re.search(rf"\bthe {device}\b", t) else 0.0
    fixes = domains.PROBLEMS.get(problem, [])
    score += sum((1.0 if step in fixes else -0.5) for step in domains.STEPS if step in t)
    score += 0.5 * any(s in t for s in ("thanks for your patience", "have a nice day", "let us know"))
    return score - 2.0 * any(s in t for s in domains.RUDE)


def _sparse_weights(seed: int = 7) -> tuple[dict, dict]:
    """reviews_sparse's hidden weights: one per aspect (N(0, 1)) and one per adjective (its sign, size 0.5-1.5)."""
    rng = random.Random(seed)
    aspects = {noun: rng.gauss(0, 1) for noun in reviews.NOUNS}
    adjectives = {a: rng.uniform(0.5, 1.5) for a in reviews.POSITIVE}
    adjectives.update({a: -rng.uniform(0.5, 1.5) for a in reviews.NEGATIVE})
    return aspects, adjectives


SPARSE_ASPECTS, SPARSE_ADJECTIVES = _sparse_weights()


def sparse_gold(prompt: str, text: str) -> float:
    """Many small weights: each clause scores its aspect's weight times its adjective's (36 hidden numbers), so a
    reward model needs many rankings to learn them all: the world where active ranking has room."""
    score = 0.0
    for clause in re.split(r",| and ", text.lower()):
        words = words_of(clause)
        noun = next((w for w in words if w in SPARSE_ASPECTS), None)
        adjective = next((w for w in words if w in SPARSE_ADJECTIVES), None)
        if noun and adjective:
            score += 2 * SPARSE_ASPECTS[noun] * SPARSE_ADJECTIVES[adjective]
    return score


# ----------------------------------------------------------------------------------------------
# Worlds


@dataclass(frozen=True)
class World:
    """One world: its text, its hidden gold, its annotators and what a user would know of their data (lengths, K)."""

    name: str
    about: str
    """What it varies, in a line."""
    gold_kind: str
    domain: str
    """reviews, recipes, weather or support (chat messages)."""
    score: Callable[[str, str], float]
    """The hidden gold preference, (prompt text, completion) -> float."""
    vocab_size: int = 640
    """Byte-level BPE vocabulary of the world's tokenizer."""
    k: int = 4
    """Completions per ranking task."""
    temperature: float = 1.0
    """The annotators' Plackett-Luce temperature."""
    annotators: int = 3
    careless: int = 0
    """Annotators (of `annotators`) who rank at random."""
    max_new_tokens: int = 40
    """Tokens sampled for ranking tasks, policy rollouts and evaluation (the data's longest completions fit)."""
    rollout_tokens: int | None = None
    """Tokens per PPO / RLOO / GRPO rollout and evaluation when shorter than max_new_tokens (reviews: 24 / 32)."""
    eval_tokens: int | None = None
    max_prompt_tokens: int = 32
    tasks: int = 420
    """Ranking tasks sampled (the training prompts repeated to about this many)."""
    facts: bool = False
    """Pretrain the base on what each dish is made of too: the knowledge a relevance gold needs on held-out dishes
    (a real base knows it; nothing else in the corpus ties a dish to its ingredients)."""

    # -- the gold, in the signatures the stages call ------------------------------------------------
    def gold_reward(self, completion: str, prompt=None) -> float:
        """The gold of one completion (judges, scripted annotators)."""
        return float(self.score(prompt_string(prompt), completion))

    def gold(self, prompts: list, completions: list[str]) -> list[float]:
        """The gold of a batch (`reward.function`, `reward.monitor`)."""
        return [self.gold_reward(c, p) for p, c in zip(prompts, completions)]

    # -- names the stages load --------------------------------------------------------------------
    @property
    def base_name(self) -> str:
        """The world's cache folder name beside the size (a world whose corpus changed gets a new one)."""
        return self.name + ("-facts" if self.facts else "")

    @property
    def model(self) -> str:
        return "builtin:tiny-llama" if self.name == "reviews" else f"builtin:tiny-llama@{self.name}"

    def spec(self, batch: bool = False) -> str:
        return f"alignment.assets.golds:{self.name}.{'gold' if batch else 'gold_reward'}"

    # -- text ----------------------------------------------------------------------------------------
    @property
    def text(self) -> Domain | None:
        return {"recipes": domains.RECIPES, "weather": domains.WEATHER, "support": domains.SUPPORT}.get(self.domain)

    def topics(self, split: str) -> list:
        if self.text is None:
            return reviews.train_topics() if split == "train" else reviews.heldout_topics()
        return self.text.train_topics() if split == "train" else self.text.test_topics()

    def prompts(self, split: str = "train") -> list[dict]:
        """Prompt rows of the split (`test`: topics no stage trains on)."""
        if self.text is None:
            return reviews.prompts(split)
        return [{"prompt": self.text.prompt(t)} for t in self.topics(split)]

    def prompt_text(self, topic) -> str:
        """A topic's prompt as plain text (a chat's messages joined)."""
        return reviews.prompt_for(topic) if self.text is None else self.text.prompt_words(topic)

    def completion(self, rng: random.Random, topic) -> str:
        return reviews.review(rng) if self.text is None else self.text.completion(rng, topic)

    def sft_rows(self, n: int = 2000, seed: int = 0) -> list[dict]:
        """SFT rows over the training topics, of every quality (so SFT is neutral on the gold)."""
        if self.text is None:
            return reviews.sft_rows(n, seed)
        rng, topics = random.Random(seed), self.topics("train")
        rows = []
        for _ in range(n):
            topic = rng.choice(topics)
            prompt, completion = self.text.prompt(topic), self.completion(rng, topic)
            if isinstance(prompt, list):
                rows.append({"messages": [*prompt, {"role": "assistant", "content": completion}]})
            else:
                rows.append({"prompt": prompt, "completion": " " + completion})
        return rows

    def repeats(self) -> int:
        return math.ceil(self.tasks / len(self.topics("train")))

    def corpus(self, n: int = 4000, seed: int = 1) -> list[str]:
        """Text the world's tokenizer is trained on: prompts, word lists and completions."""
        if self.text is None:
            return reviews.corpus(n, seed)
        rng, topics = random.Random(seed), self.text.topics
        lines = [self.text.prompt_words(t) for t in topics]
        lines += [" ".join(words) for words in self.text.word_lists]
        lines += [f"{self.text.prompt_words(t)} {self.completion(rng, t)}" for t in rng.choices(topics, k=n)]
        return lines + ([domains.dish_fact(t) for t in topics] if self.facts else [])

    def documents(self, rng: random.Random, completions: int, prompts: int) -> list[str]:
        """Pretraining documents: completions and bare prompts apart (the prompt/answer format is what SFT teaches)."""
        if self.text is None:
            texts = [reviews.review(rng) for _ in range(completions)]
            return texts + [reviews.prompt_for(rng.choice(reviews.TOPICS)) for _ in range(prompts)]
        topics = self.text.topics
        texts = [self.completion(rng, rng.choice(topics)) for _ in range(completions)]
        texts += [self.text.prompt_words(rng.choice(topics)) for _ in range(prompts)]
        if self.facts:
            texts += [domains.dish_fact(rng.choice(topics)) for _ in range(prompts)]
        return texts


WORLDS: dict[str, World] = {
    w.name: w
    for w in [
        World(
            "reviews",
            "the demo: short reviews, sentiment word counts",
            "word counts",
            "reviews",
            reviews_gold,
            rollout_tokens=24,
            eval_tokens=32,
        ),
        World(
            "reviews_contrast",
            "pairs (K=2: 1200 of them), low noise, a smaller vocabulary",
            "interaction of two features",
            "reviews",
            contrast_gold,
            vocab_size=400,
            k=2,
            temperature=0.5,
            max_new_tokens=56,
            tasks=1200,
        ),
        World(
            "recipes_format",
            "noisy annotators (T=2), K=3",
            "format rule",
            "recipes",
            format_gold,
            k=3,
            temperature=2.0,
            max_new_tokens=48,
        ),
        World(
            "recipes_relevance",
            "K=6, one careless annotator of four",
            "relevance to the prompt",
            "recipes",
            relevance_gold,
            k=6,
            annotators=4,
            careless=1,
            max_new_tokens=48,
            facts=True,
        ),
        World(
            "weather_length",
            "K=5, precise annotators (T=0.5), another vocabulary",
            "length target",
            "weather",
            length_gold,
            vocab_size=500,
            k=5,
            temperature=0.5,
            max_new_tokens=56,
        ),
        World(
            "support_chat",
            "chat messages with a system prompt, one careless annotator of four",
            "relevance and manners",
            "support",
            support_gold,
            vocab_size=800,
            annotators=4,
            careless=1,
            max_new_tokens=40,
            max_prompt_tokens=96,
        ),
        World(
            "reviews_sparse",
            "K=2 and 36 small hidden weights: random ranking learns slowly",
            "many small weights",
            "reviews",
            sparse_gold,
            k=2,
            rollout_tokens=24,
            eval_tokens=32,
            tasks=1200,
        ),
    ]
}
"""Every world by name; the first is the demo's."""


def get(name: str, key: str = "world") -> World:
    from alignment.common.errors import ConfigError

    if name not in WORLDS:
        raise ConfigError(f"'{key}': unknown world '{name}'; have {', '.join(WORLDS)}", key=key)
    return WORLDS[name]
