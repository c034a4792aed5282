"""Active vs random ranking: the reward model's held-out accuracy against the number of rankings.

    nice -n 19 python benchmarks/active_learning_curve.py --ci     # N=120 rankings in rounds of B=30, 3 seeds
    nice -n 19 python benchmarks/active_learning_curve.py          # N=432 (the demo's 428, in rounds of 48), 3 seeds

It reads the demo's SFT model in runs/tiny/sft (configs/reward.yaml's base): `rlhf sft configs/sft.yaml` first.

The demo's world, with the pieces `rlhf pipeline rounds=R acquisition.method=...` runs: review prompts,
M candidate reviews per prompt (from the corpus generator the SFT data comes from), scripted annotators
who rank K of them by the demo's hidden gold preference (alignment/assets/gold.py) with Plackett-Luce
noise at temperature 1 (reward/rankings/annotator.py). Per seed and rule: B random rankings, then in
rounds, the real reward stage (`reward.train`, LoRA on the builtin tiny Llama, configs/reward.yaml,
`--epochs`) on every ranking so far, its held-out accuracy (eval.json on a fixed set of held-out
rankings of random K-subsets), and the next B tasks chosen from the unranked prompts by the rule, with
the code `rlhf sample` uses (reward/rankings/active.py: the reward folder's uncertainty.safetensors,
features of the candidates, reward/acquisition.py), until N rankings.

Rules (--methods): `random` first, then any acquisition rule, `rule:tokens` with the bag-of-tokens
surrogate (`acquisition.features=tokens`) instead of the reward model's head posterior. Every rule gets
the same seeds, the same first batch, the same pool and budget; nothing is tuned on the held-out set.

Two measures per point: eval.json's held-out accuracy (the annotators' noisy held-out rankings, as the
reward stage reports it) and its noiseless expectation (the probability a Plackett-Luce annotator agrees
with the model on each held-out pair, from the gold reward: the same pairs without the label draw).
Prints the curves (mean over seeds), what the gold reward itself scores on each (the ceiling) and the
ratio: rankings the active rule needs to reach random's final accuracy, over random's N (lower is
better; the issue aims at <= 1/3). Writes the plot (--plot, default docs/active_learning_curve.png).
--from-log a.log,b.log re-reports (and plots) the seeds earlier runs completed, --first-seed runs later seeds.

The policy's gold win rate against rankings (--policy, at the rounds --policy-at names; a PPO run per point, so
only where asked): the demo's PPO stage (configs/ppo.yaml on runs/tiny/sft, `alignment.ppo.train.train`) against
that round's reward model for --policy-episodes (2048 by default, half the demo's 4096, past where the demo's PPO
gold levelled off when this default was chosen; the measured curve: docs/benchmarks.md), then the demo's
evaluation (`alignment.evaluate.evaluate`: the policy against SFT on the 6 held-out review prompts, --eval-samples
draws each, judged by the hidden gold reward; ties count 1/2). Round 1's
point is shared by every rule of a seed (the same reward model). It answers the question the accuracy cannot: does
a better reward model here make a better policy. One PPO run's own spread is of the size of the differences between
reward models here, so --policy-seeds S averages S PPO runs per point (and prints each). The report adds each rule
minus random paired by seed. The lines go to the same output, so --from-log re-reports them (the points of
--policy-episodes only) and the plot gets a third panel (mean ± standard error over seeds).

    nice -n 19 python benchmarks/active_learning_curve.py --ci --methods random,delta_ucb:tokens \
        --policy --policy-at 30,60,120 --first-seed 0 --seeds 1 > run.log 2>&1
    grep "rankings: " run.log >> docs/active_learning_curve.log      # the lines --from-log reads
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from active_offline import needed  # noqa: E402  (the same interpolated crossing as the offline benchmark)

from alignment.assets.worlds import WORLDS  # noqa: E402
from reward.rankings import active  # noqa: E402
from reward.rankings.annotator import plackett_luce_ranks  # noqa: E402


def world(args, seed: int) -> dict:
    """Pool prompts with M candidates each (the world's training topics), and held-out rankings of K random
    candidates of other prompts (its test topics). The reviews world keeps its earlier prompts (a noun after the
    topic), so the logged curves of docs/active_learning_curve.log stay reproducible."""
    rng, w = random.Random(seed), WORLDS[args.world]

    def prompts(n, split):
        out = []
        for _ in range(n):
            topic = rng.choice(w.topics("train" if args.world == "reviews" else split))
            prompt = w.prompt_text(topic)
            if args.world == "reviews":
                from alignment.assets import reviews

                prompt = f"{prompt[:-1]} {rng.choice(reviews.NOUNS)}:"
            out.append((prompt, [" " + w.completion(rng, topic) for _ in range(args.candidates)]))
        return out

    pool = prompts(args.pool, "train")
    held = [(p, texts[: args.k]) for p, texts in prompts(args.held_out, "test")]
    held_rows = [rank_row(args, p, t, random.Random(f"held|{seed}|{i}"), "held") for i, (p, t) in enumerate(held)]
    return {"pool": pool, "held": held_rows}


def gold_of(args, prompt: str, texts: list[str]) -> list[float]:
    return [WORLDS[args.world].gold_reward(t, prompt) for t in texts]


def rank_row(args, prompt: str, texts: list[str], rng: random.Random, who: str) -> dict:
    """A scripted annotator's K-wise ranking (Plackett-Luce around the world's gold at its annotators' temperature)."""
    ranks = plackett_luce_ranks(gold_of(args, prompt, texts), WORLDS[args.world].temperature, rng)
    return {"prompt": prompt, "completions": texts, "ranks": ranks, "annotator": who}


def ceilings_of(args, rows: list[dict]) -> tuple[float, float]:
    """(the gold reward's accuracy on the held-out rankings, its noiseless expectation: mean of sigmoid(|gold gap| /
    the annotators' temperature))."""
    gaps = []
    for r in rows:
        g = gold_of(args, r["prompt"], r["completions"])
        gaps += [abs(g[i] - g[j]) for i in range(len(g)) for j in range(i + 1, len(g))]
    scaled = torch.tensor(gaps, dtype=torch.float64) / WORLDS[args.world].temperature
    return ceiling(args, rows), float(torch.sigmoid(scaled).mean())


def ceiling(args, rows: list[dict]) -> float:
    """Accuracy of the gold reward itself on the held-out rankings (ties in gold count 1/2)."""
    right = pairs = 0.0
    for r in rows:
        g = gold_of(args, r["prompt"], r["completions"])
        for i in range(len(g)):
            for j in range(len(g)):
                if r["ranks"][i] < r["ranks"][j]:
                    pairs += 1
                    right += 1.0 if g[i] > g[j] else 0.5 if g[i] == g[j] else 0.0
    return right / max(pairs, 1)


def gold_accuracy(args, folder: str, rows: list[dict]) -> float:
    """The held-out accuracy without the annotators' noise: the mean over held-out pairs of the probability
    that a Plackett-Luce annotator agrees with the model's order, sigmoid(sign(predicted gap) * gold gap)
    (a predicted tie counts 1/2); the expectation that eval.json's accuracy samples once."""
    from reward import uncertainty
    from reward.model import load_reward_model

    model, tokenizer = load_reward_model(folder)
    prompts = [r["prompt"] for r in rows for _ in r["completions"]]
    texts = [c for r in rows for c in r["completions"]]
    _, predicted = uncertainty.features(model, tokenizer, prompts, texts, batch_size=64,
                                        max_length=active.reward_max_length(folder))  # fmt: skip
    gold = torch.tensor([WORLDS[args.world].gold_reward(t, p) for p, t in zip(prompts, texts)], dtype=torch.float64)
    gold /= WORLDS[args.world].temperature
    total = count = 0.0
    start = 0
    for r in rows:
        k = len(r["completions"])
        s, g = predicted[start : start + k].double(), gold[start : start + k]
        upper = torch.ones(k, k, dtype=torch.bool).triu(1)
        total += float(torch.sigmoid(torch.sign(s[:, None] - s[None, :]) * (g[:, None] - g[None, :]))[upper].sum())
        count += int(upper.sum())
        start += k
    return total / max(count, 1)


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def train_reward(args, folder: str, train_path: str, held_path: str, seed: int) -> None:
    """The reward stage in this process on the rankings so far (its held-out accuracy goes to eval.json)."""
    from alignment.config.loader import load_config
    from reward.train import RewardConfig, train

    overrides = [f"output_dir={folder}", f"model.name_or_path={args.sft}", f"data.path={train_path}",
                 f"data.eval_path={held_path}", f"seed={seed}",
                 f"train.epochs={args.epochs}", "train.log_steps=1000", "checkpoint.save_steps=0",
                 "tracking.wandb=false"]  # fmt: skip
    train(load_config(RewardConfig, os.path.join(ROOT, "configs", "reward.yaml"), overrides))


POLICY_LINE = re.compile(
    r"\s*seed (\d+) ([\w:]+)\s+(\d+) rankings: policy gold win rate over SFT ([\d.]+) ± ([\d.]+) "
    r"\(PPO (\d+) episodes(?:.*?; (\d+) PPO seeds:)?"
)
"""A policy point as run() prints it: seed, rule, rankings, win rate, its stderr, PPO episodes, PPO runs (if > 1)."""


def policy_point(args, folder: str, scratch: str, seed: int) -> dict:
    """PPO against one round's reward model, then its gold win rate over SFT: {"win_rate", "stderr", "gold", "kl",
    "runs"}; with --policy-seeds S, S PPO runs (seeds seed, seed + 1000, ...) on the same reward model, averaged
    (combine_runs): one PPO run's own spread is what a single point cannot tell from a better reward model.

    Kept in the reward folder (policy.json): round 1's reward model is shared by every rule of a seed, and PPO and
    the evaluation are deterministic for a seed on CPU, so its point is trained once and read by the others."""
    done = os.path.join(folder, "policy.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    runs = []
    for j in range(args.policy_seeds):
        policy = os.path.join(scratch, "policy")
        shutil.rmtree(policy, ignore_errors=True)
        train_policy(args, folder, policy, seed + 1000 * j)
        # The evaluation's seed stays the benchmark's: every policy of a seed is compared on the same SFT draws.
        runs.append(gold_win_rate(args, folder, policy, os.path.join(scratch, "policy-eval"), seed))
        shutil.rmtree(policy, ignore_errors=True)
    point = combine_runs(runs)
    with open(done, "w") as f:
        json.dump(point, f)
    return point


def combine_runs(runs: list[dict]) -> dict:
    """The mean of S PPO runs' points. Its stderr: over the runs (sample std / sqrt(S): PPO's and the evaluation's
    noise) when S > 1; the evaluation's own (384 paired draws) for one run. `runs`: each run's win rate."""
    n = len(runs)
    mean = {
        k: sum(r[k] for r in runs) / n if all(r[k] is not None for r in runs) else None
        for k in ("win_rate", "gold", "kl")
    }
    rates = [r["win_rate"] for r in runs]
    spread = (sum((x - mean["win_rate"]) ** 2 for x in rates) / max(n - 1, 1)) ** 0.5 / n**0.5
    return {**mean, "stderr": spread if n > 1 else runs[0]["stderr"], "runs": rates}


def train_policy(args, folder: str, out: str, seed: int) -> None:
    """The demo's PPO stage (configs/ppo.yaml on the SFT base, the gold watched on rollouts, never trained on) against
    the reward model in `folder`, for --policy-episodes episodes (the demo's 4096 is the default's cost x2)."""
    from alignment.config import load_config
    from alignment.demo import world_overrides
    from alignment.ppo.config import PPOConfig
    from alignment.ppo.train import train

    overrides = [*world_overrides(WORLDS[args.world])["online"], f"output_dir={out}", f"reward.path={folder}",
                 f"model.name_or_path={args.sft}", f"seed={seed}",
                 f"train.total_episodes={args.policy_episodes}", "train.sample_steps=0", "checkpoint.save_steps=0",
                 "tracking.wandb=false"]  # fmt: skip
    train(load_config(PPOConfig, os.path.join(ROOT, "configs", "ppo.yaml"), overrides))


def gold_win_rate(args, folder: str, policy: str, out: str, seed: int) -> dict:
    """The demo's evaluation of `policy` against SFT on the held-out review prompts (--eval-samples draws of each of
    the 6): the gold reward's win rate (ties 1/2) and its stderr, the policy's mean gold reward and KL to SFT."""
    from alignment.evaluate import EvalConfig, EvalDataConfig, EvalGenerationConfig, evaluate

    shutil.rmtree(out, ignore_errors=True)
    sft, w = args.sft, WORLDS[args.world]
    data = EvalDataConfig(path=f"builtin:{w.name}-prompts", split="test", max_prompt_length=w.max_prompt_tokens)
    generation = EvalGenerationConfig(num_samples=args.eval_samples, max_new_tokens=w.eval_tokens or w.max_new_tokens)
    result = evaluate(EvalConfig(output_dir=out, seed=seed, policies={"sft": sft, "policy": policy}, reference=sft,
                                 reward_model=folder, judge=w.spec(), data=data, generation=generation))  # fmt: skip
    rate = next(w for w in result["win_rates"] if w["policy"] == "policy" and w["by"] == "judge")
    mine = result["policies"]["policy"]
    return {"win_rate": rate["win_rate"], "stderr": rate["stderr"], "gold": mine["judge"], "kl": mine.get("kl")}


def policy_line(seed: int, method: str, n: int, point: dict, episodes: int) -> str:
    """The log line of a policy point (POLICY_LINE reads it back)."""
    kl = f"; KL {point['kl']:.2f}" if point.get("kl") is not None else ""
    runs = point.get("runs", [])
    each = f"; {len(runs)} PPO seeds: " + " ".join(f"{x:.4f}" for x in runs) if len(runs) > 1 else ""
    return (f"  seed {seed} {method:<12} {n:4d} rankings: policy gold win rate over SFT {point['win_rate']:.4f} ± "
            f"{point['stderr']:.4f} (PPO {episodes} episodes; gold reward {point['gold']:.3f}{kl}{each})")  # fmt: skip


def parse_policy_lines(lines, methods: list[str], episodes: int, ppo_seeds: int = 1) -> dict:
    """{seed: {rule: {rankings: (win rate, stderr)}}} from log lines: the rules in `methods`, points of `ppo_seeds`
    PPO runs of `episodes` each only (a log may hold other settings: a mean of 3 PPO runs is not paired with one
    run's point); a point logged twice keeps the last."""
    found: dict = {}
    for line in lines:
        m = POLICY_LINE.match(line)
        if m and m.group(2) in methods and int(m.group(6)) == episodes and int(m.group(7) or 1) == ppo_seeds:
            found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), {})[int(m.group(3))] = (
                float(m.group(4)), float(m.group(5)))  # fmt: skip
    return found


def mean_win_rates(points: dict, methods: list[str]) -> dict:
    """{rule: [(rankings, mean win rate, seeds, standard error over the seeds)]}: at each number of rankings, the mean
    over the seeds that measured it for every rule in `methods` (paired: the rules' means are over the same seeds),
    in order of rankings. The standard error (sample std / sqrt(seeds); 0 for one seed) is the spread the plot shows:
    seeds differ in world, reward model and PPO run, far more than one evaluation's own stderr."""
    counts = sorted({n for by in points.values() for curve in by.values() for n in curve})
    out: dict = {m: [] for m in methods}
    for n in counts:
        seeds = [s for s, by in points.items() if all(n in by.get(m, {}) for m in methods)]
        for m in methods:
            if seeds:
                rates = [points[s][m][n][0] for s in seeds]
                mean = sum(rates) / len(rates)
                spread = (sum((x - mean) ** 2 for x in rates) / max(len(rates) - 1, 1)) ** 0.5 / len(rates) ** 0.5
                out[m].append((n, mean, len(seeds), spread))
    return out


def choose(args, method: str, folder: str, pool: list, open_: list[int], seed: int) -> list[tuple[int, list[int]]]:
    """(pool index, K chosen candidates) of the next B tasks, as `rlhf sample` chooses them.

    method: a rule, or rule:features (`dopt:tokens` is acquisition.method=dopt acquisition.features=tokens)."""
    rule, _, feats = method.partition(":")
    acq = active.AcquisitionConfig(method=rule, candidates=args.candidates, reward=folder, budget=args.batch,
                                   beta=args.beta, samples=args.samples, seed=seed, features=feats or "head")  # fmt: skip
    rows = [pool[i] for i in open_]
    valid = torch.tensor([active.valid_candidates(texts) for _, texts in rows])
    keep = [j for j in range(len(rows)) if int(valid[j].sum()) >= args.k]
    posterior = active.load_posterior(acq)
    phi = None
    if posterior is not None:
        phi = torch.stack(active.features(acq, [rows[j] for j in keep], "cpu", batch_size=128))
    picks = active.choose(acq, args.k, valid[keep], phi, posterior, seed)
    return [(open_[keep[c.row]], c.chosen) for c in picks]


def run(args, data: dict, method: str, seed: int, scratch: str) -> tuple[list[tuple], dict]:
    """[(rankings so far, held-out accuracy, noiseless accuracy)] for one rule and seed, and with --policy
    {rankings: policy point} at the rounds --policy-at names."""
    pool, rng = data["pool"], random.Random(f"{seed}|order")
    os.makedirs(scratch, exist_ok=True)
    held_path = write_jsonl(os.path.join(scratch, "held.jsonl"), data["held"])
    open_ = list(range(len(pool)))
    first = rng.sample(open_, args.batch)  # the same first batch for every rule
    picks = [(i, sorted(random.Random(f"{seed}|first|{i}").sample(range(args.candidates), args.k))) for i in first]
    rows, curve, wins, round_ = [], [], {}, 0
    while True:
        for i, chosen in picks:
            prompt, texts = pool[i]
            rows.append(
                rank_row(args, prompt, [texts[j] for j in chosen], random.Random(f"{seed}|{i}|{chosen}"), "bot")
            )
            open_.remove(i)
        round_ += 1
        # Round 1 (the same random batch for every rule) is trained once per seed and shared.
        name = "first" if round_ == 1 else f"{method.replace(':', '-')}-{round_}"
        folder = os.path.join(scratch, name)
        if not os.path.isfile(os.path.join(folder, "eval.json")):
            train_reward(args, folder, write_jsonl(os.path.join(scratch, f"{name}.jsonl"), rows), held_path, seed)
        with open(os.path.join(folder, "eval.json")) as f:
            curve.append((len(rows), float(json.load(f)["accuracy"]), gold_accuracy(args, folder, data["held"])))
        print(f"  seed {seed} {method:<12} {len(rows):4d} rankings: held-out accuracy {curve[-1][1]:.4f}; "
              f"noiseless {curve[-1][2]:.4f}", flush=True)  # fmt: skip
        if args.policy and (not args.policy_at or len(rows) in args.policy_at):
            wins[len(rows)] = policy_point(args, folder, scratch, seed)
            print(policy_line(seed, method, len(rows), wins[len(rows)], args.policy_episodes), flush=True)
        if len(rows) >= args.rankings:
            return curve, wins
        picks = choose(args, method, folder, pool, open_, seed * 1000 + round_)[: args.rankings - len(rows)]
        if round_ > 1:
            shutil.rmtree(folder, ignore_errors=True)


def differences(points: dict, method: str) -> dict:
    """{seed: {method: {rankings: (its win rate - random's, 0)}}} where a seed has both: the paired comparison, as
    every rule of a seed shares the world, the first batch and the PPO seed (mean_win_rates averages it)."""
    out: dict = {}
    for seed, by in points.items():
        both = set(by.get(method, {})) & set(by.get("random", {}))
        if both:
            out[seed] = {method: {n: (by[method][n][0] - by["random"][n][0], 0.0) for n in both}}
    return out


MEASURES = ("held-out accuracy", "noiseless accuracy")


def plot(path: str, panels: list[dict], args) -> None:
    """One panel per measure: the reward model's accuracies (with the gold reward's as the ceiling) and, with policy
    points, the policy's gold win rate over SFT (SFT against itself: 0.5). A panel: mean {rule: [(n, y)]}, line
    (y, label), ylabel, title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for method, curve in panel["mean"].items():  # (n, y) or (n, y, standard error: drawn as a bar)
            errors = [p[2] for p in curve] if curve and len(curve[0]) > 2 else None
            ax.errorbar([p[0] for p in curve], [p[1] for p in curve], yerr=errors, marker="o", capsize=3, label=method)
        ax.axhline(panel["line"][0], color="grey", linestyle="--", label=panel["line"][1])
        ax.set_xlabel(f"rankings (K = {args.k})")
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"])
        ax.legend()
    fig.suptitle(f"active vs random ranking on the demo's gold preference (N = {args.rankings}, B = {args.batch}, "
                 f"M = {args.candidates}, K = {args.k})")  # fmt: skip
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="CI size: N=120, B=30, pool 240, 120 held out")
    parser.add_argument("--methods", default="random,delta_ucb:tokens,dopt:tokens",
                        help="comma-separated rules, random first; rule:tokens reads the bag-of-tokens surrogate")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random-from", help="comma-separated logs of earlier runs: reuse their random curves "
                        "(the same seed trains the same models on CPU) instead of training random again")  # fmt: skip
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--rankings", type=int, default=432, help="N, rankings in all")
    parser.add_argument("--batch", type=int, default=48, help="B, rankings per round")
    parser.add_argument("--pool", type=int, default=864, help="prompts to choose from")
    parser.add_argument("--held-out", type=int, default=200, help="held-out rankings for accuracy")
    parser.add_argument("--candidates", type=int, default=8, help="M candidates per prompt")
    parser.add_argument("--k", type=int, default=None, help="K completions ranked per task (default: the world's)")
    parser.add_argument(
        "--world", default="reviews", choices=list(WORLDS), help="the world (alignment/assets/worlds.py)"
    )
    parser.add_argument("--sft", default=os.path.join("runs", "tiny", "sft"),
                        help="the SFT run folder of that world: the reward models' base and PPO's")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=3, help="reward stage epochs (the pipeline's)")
    parser.add_argument("--beta", type=float, default=1.0, help="delta_ucb's exploration weight")
    parser.add_argument("--samples", type=int, default=32, help="disagreement's posterior draws")
    parser.add_argument("--policy", action="store_true", help="also train the demo's PPO policy against the reward "
                        "model of the rounds --policy-at names and measure its gold win rate over SFT")  # fmt: skip
    parser.add_argument("--policy-at", default="", help="comma-separated numbers of rankings (rounds' ends) for "
                        "--policy; default: every round")  # fmt: skip
    parser.add_argument("--policy-episodes", type=int, default=2048,
                        help="PPO episodes per policy (the demo's: 4096); --from-log reports these runs' points")  # fmt: skip
    parser.add_argument(
        "--policy-seeds",
        type=int,
        default=1,
        help="PPO runs (seeds) per policy point, averaged; --from-log reports the points of this many",
    )
    parser.add_argument("--eval-samples", type=int, default=64, help="draws per held-out prompt (6) in the "
                        "policy's evaluation against SFT (the demo's 64: 384 pairs)")  # fmt: skip
    parser.add_argument("--plot", default=os.path.join(ROOT, "docs", "active_learning_curve.png"))
    parser.add_argument(
        "--from-log", help="instead of running: report and plot the seeds an earlier run's output completed"
    )
    args = parser.parse_args(argv)
    args.k = args.k or WORLDS[args.world].k
    if args.ci:
        args.rankings, args.batch, args.pool, args.held_out = 120, 30, 240, 120
    methods = args.methods.split(",")
    if methods[0] != "random" or any(
        m.partition(":")[0] not in active.METHODS or m.partition(":")[2] not in ("", "head", "tokens") for m in methods
    ):
        parser.error(f"--methods: 'random' first, then any of {', '.join(active.METHODS)}, optionally with :tokens")
    args.policy_at = policy_rounds(parser, args)
    if args.policy and args.random_from and not args.from_log:
        parser.error("--random-from cannot be used with --policy: random's policies need its reward models trained")
    if min(args.policy_episodes, args.eval_samples, args.policy_seeds) < 1:
        parser.error("--policy-episodes, --policy-seeds and --eval-samples must be >= 1")
    return args


def policy_rounds(parser: argparse.ArgumentParser, args) -> set[int]:
    """--policy-at as a set of rankings, each the end of a round (B, 2B, ..., N); empty: every round."""
    rounds = [*range(args.batch, args.rankings, args.batch), args.rankings]
    try:
        wanted = {int(x) for x in args.policy_at.split(",") if x.strip()}
    except ValueError:
        parser.error(f"--policy-at: comma-separated numbers of rankings, got '{args.policy_at}'")
    bad = sorted(wanted - set(rounds))
    if bad:
        parser.error(f"--policy-at: {bad[0]} is not the end of a round ({', '.join(map(str, rounds))})")
    return wanted


def read_lines(logs: str) -> list[str]:
    lines: list[str] = []
    for path in logs.split(","):
        with open(path) as f:
            lines += f.readlines()
    return lines


def from_log(args, methods: list[str], logs: str | None = None) -> tuple[dict, list[int]]:
    """Curves of the seeds earlier runs (their printed output, --from-log, comma-separated files) completed."""
    found: dict = {}
    for line in read_lines(logs or args.from_log):
        m = re.match(r"\s*seed (\d+) ([\w:]+)\s+(\d+) rankings: held-out accuracy ([\d.]+)(?:; noiseless ([\d.]+))?",
                     line)  # fmt: skip
        if m and m.group(2) in methods:
            point = (int(m.group(3)), float(m.group(4)), float(m.group(5)) if m.group(5) else None)
            points = found.setdefault(int(m.group(1)), {}).setdefault(m.group(2), {})
            if point[2] is not None or point[0] not in points:  # a point twice: the one with both measures
                points[point[0]] = point
    found = {s: {x: [p for _, p in sorted(c.items())] for x, c in by.items()} for s, by in found.items()}
    seeds = [s for s, c in sorted(found.items()) if all(c.get(x, [(0, 0)])[-1][0] >= args.rankings for x in methods)]
    return {x: [found[s][x] for s in seeds] for x in methods}, seeds


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    methods = args.methods.split(",")
    started = time.time()
    if args.from_log:
        curves, seeds = from_log(args, methods)
        policy = parse_policy_lines(read_lines(args.from_log), methods, args.policy_episodes, args.policy_seeds)
        if not seeds and not policy:
            raise SystemExit(f"{args.from_log}: no seed completed every rule")
        report(args, methods, curves, [ceilings_of(args, world(args, s)["held"]) for s in seeds], 0.0, policy)
        return 0
    if not os.path.isdir(args.sft):
        raise SystemExit(f"{args.sft} does not exist here: train the world's SFT model first (`rlhf sft configs/sft.yaml`"
                         " for reviews, or `rlhf demo world=<name>` and --sft <its run>/sft)")  # fmt: skip
    curves, ceilings, policy = {m: [] for m in methods}, [], {}
    reused = {}
    if args.random_from:
        found, seeds = from_log(args, ["random"], args.random_from)
        reused = dict(zip(seeds, found["random"]))
    with tempfile.TemporaryDirectory(prefix="active-curve-") as scratch:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            data = world(args, seed)
            ceilings.append(ceilings_of(args, data["held"]))
            for method in methods:
                if method == "random" and seed in reused:  # the reward stage is deterministic for a seed on CPU
                    curves[method].append(reused[seed])
                    for n, acc, clean in reused[seed]:
                        print(f"  seed {seed} random       {n:4d} rankings: held-out accuracy {acc:.4f}"
                              + (f"; noiseless {clean:.4f}" if clean is not None else "") + " (from --random-from)")  # fmt: skip
                    continue
                curve, wins = run(args, data, method, seed, os.path.join(scratch, f"s{seed}"))
                curves[method].append(curve)
                policy.setdefault(seed, {})[method] = {n: (w["win_rate"], w["stderr"]) for n, w in wins.items()}
    report(args, methods, curves, ceilings, time.time() - started, policy)
    return 0


def report(args, methods: list[str], curves: dict, ceilings: list[tuple], seconds: float, policy: dict) -> None:
    """Mean curves over seeds per measure, the ratio against random's final accuracy, the policy's win rates, and the
    plot."""
    print(f"N={args.rankings} rankings in rounds of {args.batch}, pool {args.pool} prompts x M={args.candidates}, "
          f"K={args.k}, {len(ceilings)} seeds, {seconds:.0f}s")  # fmt: skip
    panels = []
    n_seeds = len(ceilings)
    for index, label in enumerate(MEASURES, start=1):
        # The seeds that measured it (an older log has no noiseless measure).
        have = [s for s in range(n_seeds) if all(p[index] is not None for cs in curves.values() for p in cs[s])]
        if not have:
            continue
        per_seed = {m: [[(p[0], p[index]) for p in cs[s]] for s in have] for m, cs in curves.items()}
        mean = {m: [(cs[0][i][0], sum(c[i][1] for c in cs) / len(cs)) for i in range(len(cs[0]))]
                for m, cs in per_seed.items()}  # fmt: skip
        best = sum(ceilings[s][index - 1] for s in have) / len(have)
        panels.append({"mean": mean, "line": (best, "gold reward itself (ceiling)"), "title": f"mean of {len(have)} seeds",
                       "ylabel": f"reward model {label}"})  # fmt: skip
        label = f"{label}, {len(have)} seeds"
        print(f"{label} (mean over seeds; the gold reward itself: {best:.4f}) at rankings "
              + ", ".join(str(n) for n, _ in mean["random"]))  # fmt: skip
        for method, curve in mean.items():
            print(f"  {method:<17}" + "  ".join(f"{a:.4f}" for _, a in curve))
        target = mean["random"][-1][1]
        for method in methods[1:]:
            n = needed(mean[method], target)
            ratios = [needed(c, r[-1][1]) / args.rankings for c, r in zip(per_seed[method], per_seed["random"])]
            print(f"ratio ({label}): {method} needs {n:.0f} rankings to reach random's final {target:.4f}: "
                  f"{n / args.rankings:.2f}x random's {args.rankings} (per seed: "
                  + ", ".join(f"{x:.2f}" for x in ratios) + ")")  # fmt: skip
    panel = report_policy(args, methods, policy)
    if panel:
        panels.append(panel)
    if panels:
        plot(args.plot, panels, args)
        print(f"plot: {args.plot}")


def report_policy(args, methods: list[str], policy: dict) -> dict | None:
    """Print the policy's gold win rate over SFT against rankings (mean over the seeds with every rule's point, then
    each seed); returns its plot panel, None without random's policy points. The rules without any (--methods may
    name rules the log has accuracies of only) are left out of it, so they do not empty the paired mean."""
    methods = [m for m in methods if any(m in by for by in policy.values())]
    if "random" not in methods:
        return None
    mean = mean_win_rates(policy, methods)
    print(f"policy gold win rate over SFT (PPO {args.policy_episodes} episodes on each round's reward model, "
          f"{args.eval_samples} draws x 6 held-out prompts), mean ± stderr over seeds [seeds] at rankings "
          + ", ".join(str(p[0]) for p in mean["random"]))  # fmt: skip
    for method, curve in mean.items():
        print(f"  {method:<17}" + "  ".join(f"{p[1]:.4f} ± {p[3]:.4f} [{p[2]}]" for p in curve))
    for method in methods[1:]:
        paired = mean_win_rates(differences(policy, method), [method])[method]
        print(f"  {method} - random, paired by seed: "
              + "  ".join(f"{n}: {d:+.4f} ± {se:.4f} [{k}]" for n, d, k, se in paired))  # fmt: skip
    for seed, by in sorted(policy.items()):
        for method in methods:
            points = sorted(by.get(method, {}).items())
            print(f"  seed {seed} {method:<17}" + "  ".join(f"{n}: {w:.4f} ± {se:.4f}" for n, (w, se) in points))
    seeds = ", ".join(str(s) for s, by in sorted(policy.items()) if all(by.get(m) for m in methods))
    return {"mean": {m: [(p[0], p[1], p[3]) for p in c] for m, c in mean.items()}, "line": (0.5, "SFT against itself"),
            "ylabel": "policy's gold win rate over SFT",
            "title": f"PPO {args.policy_episodes} episodes; mean ± stderr over seeds {seeds}"}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
