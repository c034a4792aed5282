"""Active vs random ranking: the reward model's held-out accuracy against the number of rankings.

    nice -n 5 python benchmarks/active_learning_curve.py --ci     # N=120 rankings in rounds of B=30, 3 seeds
    nice -n 5 python benchmarks/active_learning_curve.py          # N=432 (the demo's 428, in rounds of 48), 3 seeds

The demo's world, with the pieces `rlhf pipeline rounds=R acquisition.method=...` runs: review prompts,
M candidate reviews per prompt (from the corpus generator the SFT data comes from), scripted annotators
who rank K of them by the demo's hidden gold preference (alignment/assets/gold.py) with Plackett-Luce
noise at temperature 1 (reward/rankings/annotator.py). Per seed and rule: B random rankings, then in
rounds, the real reward stage (`reward.train`, LoRA on the builtin tiny Llama, configs/reward.yaml,
`--epochs`) on every ranking so far, its held-out accuracy (eval.json on a fixed set of held-out
rankings of random K-subsets), and the next B tasks chosen from the unranked prompts by the rule, with
the code `rlhf sample` uses (reward/rankings/active.py: the reward folder's uncertainty.safetensors,
features of the candidates, reward/acquisition.py), until N rankings.

Prints both curves (mean over seeds), the noise ceiling (the gold reward's own accuracy on the held-out
rankings) and the ratio: rankings the active rule needs to reach random's final accuracy, over random's
N (lower is better; the issue aims at <= 1/3). Writes the plot (--plot, default docs/active_learning_curve.png).
The policy's gold win rate is not measured here: one PPO run per point would multiply the cost by ~10.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from active_offline import needed  # noqa: E402  (the same interpolated crossing as the offline benchmark)

from alignment.assets import reviews  # noqa: E402
from alignment.assets.gold import gold_reward  # noqa: E402
from reward.rankings import active  # noqa: E402
from reward.rankings.annotator import plackett_luce_ranks  # noqa: E402


def world(args, seed: int) -> dict:
    """Pool prompts with M candidates each, and held-out rankings of K random candidates of other prompts."""
    rng = random.Random(seed)
    topics = reviews.train_topics()

    def prompts(n):
        out = []
        for _ in range(n):
            prompt = f"{reviews.prompt_for(rng.choice(topics))[:-1]} {rng.choice(reviews.NOUNS)}:"
            out.append((prompt, [" " + reviews.review(rng) for _ in range(args.candidates)]))
        return out

    pool = prompts(args.pool)
    held = [(p, texts[: args.k]) for p, texts in prompts(args.held_out)]
    held_rows = [rank_row(p, texts, random.Random(f"held|{seed}|{i}"), "held") for i, (p, texts) in enumerate(held)]
    return {"pool": pool, "held": held_rows}


def rank_row(prompt: str, texts: list[str], rng: random.Random, who: str) -> dict:
    """A scripted annotator's K-wise ranking (Plackett-Luce around the gold reward, temperature 1)."""
    ranks = plackett_luce_ranks([gold_reward(t) for t in texts], 1.0, rng)
    return {"prompt": prompt, "completions": texts, "ranks": ranks, "annotator": who}


def ceiling(rows: list[dict]) -> float:
    """Accuracy of the gold reward itself on the held-out rankings (ties in gold count 1/2)."""
    right = pairs = 0.0
    for r in rows:
        g = [gold_reward(t) for t in r["completions"]]
        for i in range(len(g)):
            for j in range(len(g)):
                if r["ranks"][i] < r["ranks"][j]:
                    pairs += 1
                    right += 1.0 if g[i] > g[j] else 0.5 if g[i] == g[j] else 0.0
    return right / max(pairs, 1)


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def train_reward(args, folder: str, train_path: str, held_path: str, seed: int) -> None:
    """The reward stage in this process on the rankings so far (its held-out accuracy goes to eval.json)."""
    from alignment.config import load_config
    from reward.train import RewardConfig, train

    overrides = [f"output_dir={folder}", f"data.path={train_path}", f"data.eval_path={held_path}", f"seed={seed}",
                 f"train.epochs={args.epochs}", "train.log_steps=1000", "checkpoint.save_steps=0",
                 "tracking.wandb=false"]  # fmt: skip
    train(load_config(RewardConfig, os.path.join(ROOT, "configs", "reward.yaml"), overrides))


def choose(args, method: str, folder: str, pool: list, open_: list[int], seed: int) -> list[tuple[int, list[int]]]:
    """(pool index, K chosen candidates) of the next B tasks, as `rlhf sample` chooses them."""
    acq = active.AcquisitionConfig(method=method, candidates=args.candidates, reward=folder, budget=args.batch,
                                   beta=args.beta, samples=args.samples, seed=seed)  # fmt: skip
    rows = [pool[i] for i in open_]
    valid = torch.tensor([active.valid_candidates(texts) for _, texts in rows])
    keep = [j for j in range(len(rows)) if int(valid[j].sum()) >= args.k]
    posterior = active.load_posterior(acq)
    phi = None
    if posterior is not None:
        phi = torch.stack(active.features(acq, [rows[j] for j in keep], "cpu", batch_size=128))
    picks = active.choose(acq, args.k, valid[keep], phi, posterior, seed)
    return [(open_[keep[c.row]], c.chosen) for c in picks]


def run(args, data: dict, method: str, seed: int, scratch: str) -> list[tuple[int, float]]:
    """[(rankings so far, held-out accuracy)] for one rule and seed."""
    pool, rng = data["pool"], random.Random(f"{seed}|order")
    os.makedirs(scratch, exist_ok=True)
    held_path = write_jsonl(os.path.join(scratch, "held.jsonl"), data["held"])
    open_ = list(range(len(pool)))
    first = rng.sample(open_, args.batch)  # the same first batch for every rule
    picks = [(i, sorted(random.Random(f"{seed}|first|{i}").sample(range(args.candidates), args.k))) for i in first]
    rows, curve, round_ = [], [], 0
    while True:
        for i, chosen in picks:
            prompt, texts = pool[i]
            rows.append(rank_row(prompt, [texts[j] for j in chosen], random.Random(f"{seed}|{i}|{chosen}"), "bot"))
            open_.remove(i)
        round_ += 1
        # Round 1 (the same random batch for every rule) is trained once per seed and shared.
        name = "first" if round_ == 1 else f"{method}-{round_}"
        folder = os.path.join(scratch, name)
        if not os.path.isfile(os.path.join(folder, "eval.json")):
            train_reward(args, folder, write_jsonl(os.path.join(scratch, f"{name}.jsonl"), rows), held_path, seed)
        with open(os.path.join(folder, "eval.json")) as f:
            curve.append((len(rows), float(json.load(f)["accuracy"])))
        print(f"  seed {seed} {method:<12} {len(rows):4d} rankings: held-out accuracy {curve[-1][1]:.4f}", flush=True)
        if len(rows) >= args.rankings:
            return curve
        picks = choose(args, method, folder, pool, open_, seed * 1000 + round_)[: args.rankings - len(rows)]
        if round_ > 1:
            shutil.rmtree(folder, ignore_errors=True)


def plot(path: str, mean: dict, best: float, args, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, curve in mean.items():
        ax.plot([n for n, _ in curve], [a for _, a in curve], marker="o", label=method)
    ax.axhline(best, color="grey", linestyle="--", label="noise ceiling (gold)")
    ax.set_xlabel(f"rankings (K = {args.k})")
    ax.set_ylabel("reward model held-out accuracy")
    ax.set_title(f"active vs random ranking, mean of {seeds} seeds (M = {args.candidates})")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="CI size: N=120, B=30, pool 240, 120 held out")
    parser.add_argument("--methods", default="random,dopt", help="comma-separated rules, random first")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rankings", type=int, default=432, help="N, rankings in all")
    parser.add_argument("--batch", type=int, default=48, help="B, rankings per round")
    parser.add_argument("--pool", type=int, default=864, help="prompts to choose from")
    parser.add_argument("--held-out", type=int, default=200, help="held-out rankings for accuracy")
    parser.add_argument("--candidates", type=int, default=8, help="M candidates per prompt")
    parser.add_argument("--k", type=int, default=4, help="K completions ranked per task")
    parser.add_argument("--epochs", type=int, default=3, help="reward stage epochs (the pipeline's)")
    parser.add_argument("--beta", type=float, default=1.0, help="delta_ucb's exploration weight")
    parser.add_argument("--samples", type=int, default=32, help="disagreement's posterior draws")
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "active_learning_curve.png"))
    parser.add_argument(
        "--from-log", help="instead of running: report and plot the seeds an earlier run's output completed"
    )
    args = parser.parse_args(argv)
    if args.ci:
        args.rankings, args.batch, args.pool, args.held_out = 120, 30, 240, 120
    methods = args.methods.split(",")
    if methods[0] != "random" or any(m not in active.METHODS for m in methods):
        parser.error(f"--methods: 'random' first, then any of {', '.join(active.METHODS)}")
    return args


def from_log(args, methods: list[str]) -> tuple[dict, list[int]]:
    """Curves of the seeds an earlier run (its printed output in --from-log) completed for every rule."""
    import re

    found: dict = {}
    with open(args.from_log) as f:
        for line in f:
            m = re.match(r"\s*seed (\d+) (\w+)\s+(\d+) rankings: held-out accuracy ([\d.]+)", line)
            if m and m.group(2) in methods:
                found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), []).append(
                    (int(m.group(3)), float(m.group(4)))
                )
    seeds = [s for s, c in sorted(found.items()) if all(c.get(x, [(0, 0)])[-1][0] >= args.rankings for x in methods)]
    return {x: [found[s][x] for s in seeds] for x in methods}, seeds


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    methods = args.methods.split(",")
    started = time.time()
    if args.from_log:
        curves, seeds = from_log(args, methods)
        if not seeds:
            raise SystemExit(f"{args.from_log}: no seed completed every rule")
        report(args, methods, curves, [ceiling(world(args, s)["held"]) for s in seeds], 0.0)
        return 0
    curves, ceilings = {m: [] for m in methods}, []
    with tempfile.TemporaryDirectory(prefix="active-curve-") as scratch:
        for seed in range(args.seeds):
            data = world(args, seed)
            ceilings.append(ceiling(data["held"]))
            for method in methods:
                curves[method].append(run(args, data, method, seed, os.path.join(scratch, f"s{seed}")))
    report(args, methods, curves, ceilings, time.time() - started)
    return 0


def report(args, methods: list[str], curves: dict, ceilings: list[float], seconds: float) -> None:
    """Mean curves over seeds, the ratio against random's final accuracy, and the plot."""
    mean = {
        m: [(cs[0][i][0], sum(c[i][1] for c in cs) / len(cs)) for i in range(len(cs[0]))] for m, cs in curves.items()
    }
    best = sum(ceilings) / len(ceilings)
    print(f"N={args.rankings} rankings in rounds of {args.batch}, pool {args.pool} prompts x M={args.candidates}, "
          f"K={args.k}, {len(ceilings)} seeds, {seconds:.0f}s; noise ceiling {best:.4f}")  # fmt: skip
    print("held-out accuracy (mean over seeds) at rankings " + ", ".join(str(n) for n, _ in mean["random"]))
    for method, curve in mean.items():
        print(f"  {method:<13}" + "  ".join(f"{a:.4f}" for _, a in curve))
    target = mean["random"][-1][1]
    for method in methods[1:]:
        n = needed(mean[method], target)
        per_seed = [needed(c, r[-1][1]) / args.rankings for c, r in zip(curves[method], curves["random"])]
        print(f"ratio: {method} needs {n:.0f} rankings to reach random's final accuracy {target:.4f}: "
              f"{n / args.rankings:.2f}x random's {args.rankings} (per seed: "
              + ", ".join(f"{x:.2f}" for x in per_seed) + ")")  # fmt: skip
    plot(args.plot, mean, best, args, len(ceilings))
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    raise SystemExit(main())
