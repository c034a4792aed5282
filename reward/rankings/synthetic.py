"""A K-wise preference set with a known rule and known noise, from the embedded reviews world.

Each prompt gets K reviews; a simulated annotator ranks them by `gold_reward` (positive minus
negative words) plus Gumbel noise at its temperature. Sorting utility + Gumbel noise samples a
Plackett-Luce ranking, and every pair in it follows Bradley-Terry exactly:
P(i above j) = sigmoid((gold_i - gold_j) / T). So the best accuracy any reward model can reach on
these labels is known, and `best_achievable` computes it.

    python -m reward.rankings.synthetic runs/data/rankings.jsonl --prompts 800 --k 4
    rlhf reward configs/reward.yaml data.path=runs/data/rankings.jsonl

`builtin:reviews-rankings` (the default data of configs/reward.yaml) is this set, generated in memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random

from alignment.assets import reviews
from alignment.assets.gold import gold_reward

ANNOTATORS = (("careful", 0.5), ("hasty", 1.5))
"""(name, noise temperature) of the simulated annotators, who take turns."""


def rankings(n_prompts: int = 800, k: int = 4, seed: int = 0, noise: float = 1.0, annotators=ANNOTATORS) -> list[dict]:
    """`n_prompts` rows in the K-wise export schema; `noise` scales every annotator's temperature."""
    rng = random.Random(seed)
    topics = reviews.TOPICS
    rows = []
    for i in range(n_prompts):
        # 24 topics x 12 aspects = 288 prompts in the tiny tokenizer's vocabulary: enough for a split by prompt.
        prompt = f"{reviews.prompt_for(rng.choice(topics))[:-1]} {rng.choice(reviews.NOUNS)}:"
        completions = [" " + reviews.review(rng) for _ in range(k)]
        gold = [gold_reward(c) for c in completions]
        name, temperature = annotators[i % len(annotators)]
        temperature *= noise
        utility = [g / temperature - math.log(-math.log(rng.random() or 1e-12)) for g in gold]
        order = sorted(range(k), key=lambda j: -utility[j])
        ranks = [0] * k
        for position, j in enumerate(order):
            ranks[j] = position + 1
        rows.append(
            {
                "prompt": prompt,
                "completions": completions,
                "ranks": ranks,
                "annotator": name,
                "task_id": i,
                "meta": {"gold": gold, "temperature": temperature, "source": "reward.rankings.synthetic"},
            }
        )
    return rows


def best_achievable(rows: list[dict]) -> dict:
    """Pairwise accuracy of the gold rule itself on these labels: `empirical` (on the sampled ranks) and
    `expected` (its expectation under the noise model: mean over pairs of max(p, 1 - p)).
    Pairs with equal gold reward count 0.5: no model can do better than a coin there."""
    hits = expected = pairs = 0.0
    for row in rows:
        gold, ranks, temperature = row["meta"]["gold"], row["ranks"], row["meta"]["temperature"]
        for i in range(len(gold)):
            for j in range(len(gold)):
                if ranks[i] < ranks[j]:
                    pairs += 1
                    hits += 1.0 if gold[i] > gold[j] else 0.5 if gold[i] == gold[j] else 0.0
                    p = 1 / (1 + math.exp(-(gold[i] - gold[j]) / temperature))
                    expected += max(p, 1 - p)
    return {"empirical": hits / max(pairs, 1), "expected": expected / max(pairs, 1), "pairs": int(pairs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward.rankings.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="jsonl file to write")
    parser.add_argument("--prompts", type=int, default=800, help="rankings (one prompt each)")
    parser.add_argument("--k", type=int, default=4, help="completions per prompt")
    parser.add_argument("--noise", type=float, default=1.0, help="scale of the annotators' noise temperatures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = rankings(args.prompts, args.k, args.seed, args.noise)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    best = best_achievable(rows)
    print(f"wrote {len(rows)} rankings (K={args.k}) to {args.out}; gold-rule accuracy {best['empirical']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
