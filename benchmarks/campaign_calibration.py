"""Calibration of a campaign's intervals: do the 95% bootstrap intervals of the pairwise win rates cover the true
(gold-derived) win rates in about 95% of simulated campaigns?

    python benchmarks/campaign_calibration.py                       # 100 campaigns through the real store
    python benchmarks/campaign_calibration.py --campaigns 20 --mode pure   # the quick version, no store

The world: a population of prompts; for each, one completion per policy with a gold score
g_p(x) = mu_p + prompt effect + completion effect (normal). Scripted annotators of known noise rank each task by
Plackett-Luce at their temperature T_a (reward/rankings/simulate.py), so P(p ranked above q by a) is exactly
sigmoid((g_p(x) - g_q(x)) / T_a), and the true win rate of p over q, what a campaign estimates, is its mean over
the population and the annotators (each ranks every task: N = the pool). A campaign draws `--prompts` prompts,
collects the rankings (mode `store`: a real SQLite store, campaign tasks in random stored order, each annotator
leasing and submitting; mode `pure`: the same rankings without the store), computes the report's bootstrap
intervals (prompts resampled) and checks, for every pair of policies, whether the interval holds the truth.
Prints the coverage over all pairs and campaigns, and per pair.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from reward.rankings import ratings  # noqa: E402
from reward.rankings.simulate import SimAnnotator, rank_in_store  # noqa: E402

MEANS = (0.0, 0.4, 0.8, 1.4)
"""Gold mean of each policy: some close pairs, some far apart."""
TEMPERATURES = (0.5, 1.0, 1.5)
"""The annotators' noise: careful, average, hasty."""


def population(size: int, seed: int, prompt_sd: float = 1.0, item_sd: float = 1.0) -> np.ndarray:
    """Gold scores [size, P] of one completion per policy per prompt."""
    rng = np.random.default_rng(seed)
    return (
        np.array(MEANS)[None] + prompt_sd * rng.normal(size=(size, 1)) + item_sd * rng.normal(size=(size, len(MEANS)))
    )


def true_win_rates(gold: np.ndarray, temperatures=TEMPERATURES) -> np.ndarray:
    """[P, P]: mean over prompts and annotators of sigmoid((g_p - g_q) / T)."""
    diff = gold[:, :, None] - gold[:, None, :]
    return np.mean([1 / (1 + np.exp(-diff / t)) for t in temperatures], axis=0).mean(axis=0)


def pure_campaign(gold: np.ndarray, seed: int) -> tuple:
    """(items, ranks, shown, cluster) of every annotator ranking every prompt, without the store."""
    people = [SimAnnotator(f"a{t}", t) for t in TEMPERATURES]
    P = gold.shape[1]
    rng = random.Random(seed)
    items, ranks, shown = [], [], []
    for x, g in enumerate(gold):
        for a in people:
            order = rng.sample(range(P), P)
            items.append(list(range(P)))
            ranks.append(a.ranks(list(g), order, f"{seed}:{x}"))
            shown.append([order.index(k) for k in range(P)])
    cluster = np.repeat(np.arange(len(gold)), len(people))
    return np.array(items), np.array(ranks), np.array(shown), cluster


def store_campaign(gold: np.ndarray, seed: int, folder: str) -> tuple:
    """The same campaign through a real store: create_campaign, each annotator leasing and submitting."""
    from reward.rankings.campaign import arrays
    from reward.rankings.store import open_store

    store = open_store(os.path.join(folder, f"c{seed}.db"))
    names = [f"p{k}" for k in range(gold.shape[1])]
    hidden = {}
    tasks = []
    for x, g in enumerate(gold):
        order = random.Random(f"{seed}:{x}").sample(range(len(names)), len(names))
        texts = [f"prompt {x}, completion of {names[k]}" for k in order]
        hidden.update({t: float(g[k]) for t, k in zip(texts, order)})
        tasks.append(
            {
                "prompt": f"prompt {x}",
                "completions": [{"text": t} for t in texts],
                "meta": {"policies": [names[k] for k in order]},
            }
        )
    store.create_campaign("calibration", tasks, annotators_per_task=len(TEMPERATURES), meta={"policies": names})
    people = [SimAnnotator(f"a{t}", t) for t in TEMPERATURES]
    rank_in_store(store, people, lambda prompt, text: hidden[text], seed=seed)
    _, rows = store.campaign_rankings("calibration")
    store.close()
    return arrays(rows, names, "prompt")


def one_campaign(pop: np.ndarray, truth: np.ndarray, prompts: int, seed: int, mode: str, samples: int, folder=None):
    """(covered [P, P] bool for p != q, the report's win-rate intervals) of one simulated campaign."""
    pick = np.random.default_rng(10_000 + seed).choice(len(pop), size=prompts, replace=False)
    data = pure_campaign(pop[pick], seed) if mode == "pure" else store_campaign(pop[pick], seed, folder)
    names = [f"p{k}" for k in range(pop.shape[1])]
    stats = ratings.campaign_statistics(*data, names, samples=samples, seed=seed)
    covered = {}
    for i, p in enumerate(names):
        for j, q in enumerate(names):
            if i < j:
                w = stats["win_rates"][p][q]
                covered[(p, q)] = w["low"] <= truth[i, j] <= w["high"]
    return covered


def run(campaigns: int, prompts: int, mode: str, samples: int = 1000, seed: int = 0) -> dict:
    """Coverage over `campaigns` simulated campaigns: {"coverage", "per_pair", "intervals", "truth"}."""
    pop = population(20_000, seed)
    truth = true_win_rates(pop)
    hits: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for c in range(campaigns):
            for pair, ok in one_campaign(pop, truth, prompts, seed * 1000 + c, mode, samples, folder).items():
                hits.setdefault(pair, []).append(ok)
    total = [ok for oks in hits.values() for ok in oks]
    return {
        "coverage": sum(total) / len(total),
        "intervals": len(total),
        "per_pair": {f"{p}>{q}": sum(oks) / len(oks) for (p, q), oks in hits.items()},
        "truth": {f"p{i}>p{j}": float(truth[i, j]) for i in range(len(MEANS)) for j in range(i + 1, len(MEANS))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=60, help="prompts (tasks) per campaign")
    parser.add_argument("--mode", choices=("store", "pure"), default="store")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    out = run(args.campaigns, args.prompts, args.mode, args.samples, args.seed)
    print(
        f"{args.campaigns} campaigns x {args.prompts} prompts x {len(TEMPERATURES)} annotators "
        f"(T = {', '.join(map(str, TEMPERATURES))}), {len(MEANS)} policies, mode {args.mode}, "
        f"{args.samples} bootstrap resamples, {time.time() - started:.0f} s"
    )
    for pair, cov in out["per_pair"].items():
        print(f"  {pair}: true win rate {out['truth'][pair]:.3f}, covered in {cov:.0%} of campaigns")
    low = out["coverage"] - 1.96 * math.sqrt(out["coverage"] * (1 - out["coverage"]) / out["intervals"])
    print(f"coverage of the 95% intervals: {out['coverage']:.3f} over {out['intervals']} intervals (>= {low:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
