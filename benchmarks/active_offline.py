"""Active vs random selection of what people rank, offline: a linear Bradley-Terry world with a known reward.

    python benchmarks/active_offline.py                          # 3 seeds, ~1-2 min on 2 CPU cores
    python benchmarks/active_offline.py --spread 0               # every prompt's candidates equally diverse
    python benchmarks/active_offline.py --tasks random           # the rules choose K of M only, prompts random
    python benchmarks/active_offline.py --seeds 1 --budget 300   # a quick look
    python benchmarks/active_offline.py --cost 4096 --pool 200 --candidates 16 --threads 2   # time and memory at d

The world: a pool of prompts, each with M candidate completions whose features phi [d] are a prompt's
own vector (it cancels in every comparison) plus candidate variation with a decaying spectrum (some
directions vary rarely) and a per-prompt diversity drawn log-normally (`--spread`: at low sampling
temperature some prompts give near-identical candidates, others very different ones). The hidden
reward is r* = w* . phi; a scripted annotator ranks the K shown candidates by Plackett-Luce with
temperature 1 (the demo's annotator model), so every pair follows Bradley-Terry on r*.

Other worlds (`--world`): any world of the family (alignment/assets/worlds.py; `reviews` is the demo's: its
prompts, M completions each from its generator, its hidden gold as r*) with as features what the score head of
`--model` reads, frozen (default the world's base), or with `--features tokens` the hashed bag-of-token counts
of `acquisition.features=tokens`; `tokens` is `--world reviews --features tokens`: the demo's gold counts words,
so there the linear head is the right model and the curves bound what selection can gain on the demo world.

    python benchmarks/active_offline.py --world tokens --pool 240 --held-out 500 --start 30 --batch 30 --budget 120 --seeds 5
    python benchmarks/active_offline.py --world tokens --pool 864 --held-out 500 --start 48 --batch 48 --budget 432

The loop, per rule and seed: rank `--start` random tasks; then in rounds, fit the reward head (MAP
Bradley-Terry, Newton's method, prior precision 1: the reward model on fixed features), take its
last-layer Laplace posterior (reward.uncertainty), choose the next `--batch` tasks and their K of M
candidates with the rule (reward.acquisition.select), rank them, until `--budget` rankings. Held-out
accuracy is the expected pairwise accuracy on noisy rankings of random K-subsets of held-out prompts:
mean over their pairs of sigmoid(sign(predicted gap) * true gap), computed exactly instead of sampled.

Prints each rule's accuracy curve (mean over seeds) and the ratio it is judged by: the rankings a rule
needs to reach the random rule's final accuracy, over random's budget (lower is better; < 1/3 is
part B's aim).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402
from reward import acquisition as A  # noqa: E402
from reward import uncertainty as U  # noqa: E402


def linear_world(args, seed: int) -> dict:
    """Pool and held-out prompts with features [T, M, d] and true rewards [T, M] = phi . w*."""
    g = torch.Generator().manual_seed(seed)
    d, m = args.dim, args.candidates
    spectrum = torch.arange(1, d + 1, dtype=torch.float64) ** -args.decay
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    # Scale w* so the typical true gap between two candidates is `--gap` (x annotator temperature 1).
    w_star *= args.gap / math.sqrt(2 * float((w_star * spectrum).square().sum()))

    def prompts(n):
        own = torch.randn(n, 1, d, generator=g, dtype=torch.float64)
        diversity = torch.exp(args.spread * torch.randn(n, 1, 1, generator=g, dtype=torch.float64))
        variation = torch.randn(n, m, d, generator=g, dtype=torch.float64) * spectrum * diversity
        phi = own + variation
        return phi, phi @ w_star

    return finish_world(args, g, *prompts(args.pool), *prompts(args.held_out))


def family_world(args, seed: int) -> dict:
    """A world of the family (alignment/assets/worlds.py; `reviews` is the demo's): its prompts (pool: training topics,
    held out: test topics), M completions each from its generator, its hidden gold as r*, and as features what the
    score head of `--model` reads (a reward run folder, or a base: default the world's own), or with
    `--features tokens` the hashed bag-of-token counts of `acquisition.features=tokens`."""
    import random

    from alignment.assets.worlds import WORLDS
    from alignment.runtime import tiny
    from reward.model import load_reward_model

    world = WORLDS["reviews" if args.world == "tokens" else args.world]
    model, tokenizer = load_reward_model(tiny.resolve(args.model or world.model))
    rng = random.Random(seed)

    def prompts(n, split):
        topics = [rng.choice(world.topics(split)) for _ in range(n)]
        texts = [world.prompt_text(t) for t in topics]
        candidates = [[" " + world.completion(rng, t) for _ in range(args.candidates)] for t in topics]
        if args.world == "tokens" or args.features == "tokens":  # the surrogate's features: no forward pass
            from reward.rankings.active import token_features

            flat = token_features(tokenizer, [c for row in candidates for c in row], args.token_dim)
            phi = flat.reshape(n, args.candidates, -1)
        else:
            phi, _ = U.candidate_features(model, tokenizer, texts, candidates, batch_size=64, max_length=96)
        gold = torch.tensor([[world.gold_reward(c, p) for c in row] for p, row in zip(texts, candidates)])
        return phi.double(), gold.double()

    g = torch.Generator().manual_seed(seed)
    return finish_world(args, g, *prompts(args.pool, "train"), *prompts(args.held_out, "test"))


def finish_world(args, g, pool, pool_r, held, held_r) -> dict:
    """Held out: K random candidates of each held-out prompt, every pair of them compared."""
    subsets = torch.rand(held.shape[0], held.shape[1], generator=g).argsort(-1)[:, : args.k]
    held_r = torch.take_along_dim(held_r, subsets, 1)
    upper = torch.ones(args.k, args.k, dtype=torch.bool).triu(1)
    return {
        "pool": pool,
        "pool_r": pool_r,
        "held": torch.take_along_dim(held, subsets[..., None], 1),
        "held_gap": (held_r[:, :, None] - held_r[:, None, :])[:, upper],
        "upper": upper,
    }


def annotate(r_true: torch.Tensor, tasks: torch.Tensor, chosen: torch.Tensor, g: torch.Generator) -> list:
    """Plackett-Luce rankings (temperature 1) of the chosen candidates of `tasks`, as (winner, loser) pairs of
    flat candidate indices (task * M + candidate)."""
    m, pairs = r_true.shape[1], []
    for task, subset in zip(tasks.tolist(), chosen.tolist()):
        gumbel = -torch.log(-torch.log(torch.rand(len(subset), generator=g, dtype=torch.float64)))
        order = [task * m + subset[i] for i in (r_true[task, subset] + gumbel).argsort(descending=True).tolist()]
        pairs += [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]
    return pairs


def held_out_accuracy(world: dict, w: torch.Tensor) -> float:
    """Expected accuracy on noisy held-out rankings: mean over pairs of sigmoid(sign(predicted gap) * true gap)
    (the probability the annotator agrees with the model's order; a predicted tie counts 1/2)."""
    predicted = world["held"] @ w
    sign = torch.sign(predicted[:, :, None] - predicted[:, None, :])[:, world["upper"]]
    return float(torch.sigmoid(sign * world["held_gap"]).mean())


def ceiling(world: dict) -> float:
    """The best achievable held-out accuracy: the true reward's own (mean of sigmoid(|true gap|))."""
    return float(torch.sigmoid(world["held_gap"].abs()).mean())


def run(args, world: dict, method: str, seed: int) -> list[tuple[int, float]]:
    """[(rankings so far, held-out accuracy)] for one rule and seed."""
    g = torch.Generator().manual_seed(seed)
    pool, r_true = world["pool"], world["pool_r"]
    t, m, d = pool.shape
    flat = pool.reshape(t * m, d)
    open_ = torch.ones(t, dtype=torch.bool)
    pairs: list[tuple[int, int]] = []
    w = torch.zeros(d, dtype=torch.float64)
    curve, done = [], 0
    first = torch.randperm(t, generator=g)[: args.start]
    chosen = A.random_selection(len(first), m, args.k, seed).chosen
    while True:
        open_[first] = False
        pairs += annotate(r_true, first, chosen, g)
        done += len(first)
        index = torch.tensor(pairs)
        w = U.fit_map(flat[index[:, 0]] - flat[index[:, 1]], args.prior, w)  # warm start from the last round
        curve.append((done, held_out_accuracy(world, w)))
        if done >= args.budget:
            return curve
        # Next round: the rule chooses among the prompts nobody has ranked yet.
        candidates = open_.nonzero()[:, 0]
        posterior = U.laplace(flat, index, w, prior_precision=args.prior)
        batch = min(args.batch, args.budget - done)
        by_rule = args.tasks == "rule"
        sel = A.select(method, posterior, pool[candidates], args.k, seed=seed * 1000 + done, beta=args.beta,
                       budget=batch if by_rule else 0)  # fmt: skip
        top = A.serving_order(sel.scores)[:batch] if by_rule else torch.randperm(len(candidates), generator=g)[:batch]
        first, chosen = candidates[top], sel.chosen[top]


def needed(curve: list[tuple[int, float]], target: float) -> float:
    """Rankings at which the curve first reaches `target` (linear between rounds); inf if never."""
    previous = None
    for n, acc in curve:
        if acc >= target:
            if previous is None or previous[1] >= acc:
                return float(n)
            n0, a0 = previous
            return n0 + (n - n0) * (target - a0) / (acc - a0)
        previous = (n, acc)
    return float("inf")


def cost(args) -> None:
    """Time and memory of the Laplace pieces at hidden size `--cost` (random features: the cost does not depend on them)."""
    import resource

    d, t, m, p = args.cost, args.pool, args.candidates, args.cost_pairs
    g = torch.Generator().manual_seed(0)
    texts = torch.randn(2 * p // 3, d, generator=g)  # K = 4 rankings: 4 texts give 6 pairs
    pairs = torch.randint(0, len(texts), (p, 2), generator=g)
    candidates = torch.randn(t, m, d, generator=g)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clock = time.time()
    posterior = U.laplace(texts, pairs, torch.randn(d, generator=g) / d**0.5)
    built = time.time() - clock
    clock = time.time()
    mean, cov = U.predict(posterior, candidates)
    predicted = time.time() - clock
    clock = time.time()
    A.d_optimal(candidates, mean, U.covariance(posterior), args.k, budget=args.batch)
    chosen = time.time() - clock
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss
    print(f"d={d}: H from {p} pairs + Cholesky {built:.1f}s; mean and covariance of {t} x {m} candidates "
          f"{predicted:.1f}s; dopt choosing {args.batch} of {t} tasks {chosen:.1f}s; posterior {d * d * 8 / 2**20:.0f} MB "
          f"(float64 factor), peak RSS growth {peak:.0f} MB; {torch.get_num_threads()} threads")  # fmt: skip


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(A.METHODS), help="comma-separated rules (random first)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=3000, help="prompts available to rank")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out prompts for accuracy")
    parser.add_argument("--dim", type=int, default=64, help="feature dimension d")
    parser.add_argument("--candidates", type=int, default=8, help="M candidates per prompt")
    parser.add_argument("--k", type=int, default=4, help="K completions ranked per task")
    parser.add_argument("--start", type=int, default=50, help="random rankings before the first model")
    parser.add_argument("--batch", type=int, default=50, help="rankings per round")
    parser.add_argument("--budget", type=int, default=600, help="rankings in all")
    parser.add_argument("--gap", type=float, default=2.0, help="typical true reward gap between two candidates")
    parser.add_argument("--decay", type=float, default=0.5, help="feature spectrum: scale of direction j is j^-decay")
    parser.add_argument("--spread", type=float, default=1.0, help="log-normal sigma of per-prompt diversity")
    parser.add_argument("--prior", type=float, default=1.0, help="prior precision of the head")
    parser.add_argument("--beta", type=float, default=1.0, help="delta_ucb's exploration weight")
    parser.add_argument(
        "--tasks",
        choices=("rule", "random"),
        default="rule",
        help="which prompts are ranked: the rule's highest scores, or random (the rule picks K of M only)",
    )
    from alignment.assets.worlds import WORLDS

    parser.add_argument(
        "--world", choices=("linear", "tokens", *WORLDS), default="linear", help="linear, or a world of the family"
    )
    parser.add_argument(
        "--features", choices=("head", "tokens"), default="head", help="family worlds: what r is fit on"
    )
    parser.add_argument("--token-dim", type=int, default=1024, help="tokens world: hashed bag-of-tokens width")
    parser.add_argument(
        "--model", default=None, help="family worlds: whose features (reward folder or base; default the world's)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cost", type=int, default=0, help="instead: time and memory at this hidden size")
    parser.add_argument("--cost-pairs", type=int, default=12000, help="--cost: comparisons in H")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    if methods[0] != "random" or any(x not in A.METHODS for x in methods):
        parser.error(f"--methods: 'random' first, then any of {', '.join(A.METHODS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    methods = args.methods.split(",")
    if args.cost:
        torch.set_num_threads(args.threads)
        print(harness.machine(args.threads), flush=True)
        cost(args)
        return 0
    # One thread: the matrices are small and batched, and on a busy machine OpenMP's hand-offs cost more than they save.
    torch.set_num_threads(args.threads)

    started = time.time()
    curves, ceilings = {x: [] for x in methods}, []
    for seed in range(args.seeds):
        world = (linear_world if args.world == "linear" else family_world)(args, seed)
        ceilings.append(ceiling(world))
        for method in methods:
            curves[method].append(run(args, world, method, seed))
    mean = {x: [(c[0][0], sum(c2[i][1] for c2 in cs) / len(cs)) for i, c in enumerate(zip(*cs))]
            for x, cs in curves.items()}  # fmt: skip
    report(args, curves, mean, sum(ceilings) / len(ceilings), time.time() - started)
    return 0


def report(args, curves: dict, mean: dict, best: float, seconds: float) -> None:
    pairs = math.comb(args.k, 2)
    rounds = [n for n, _ in mean["random"]]
    marks = sorted({min(rounds, key=lambda n: abs(n - args.budget * f)) for f in (0, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 1)})
    features = "token counts" if args.world == "tokens" or args.features == "tokens" else f"the head of {args.model}"
    world = f"linear, d={args.dim}, spread {args.spread}, decay {args.decay}" if args.world == "linear" else (
        f"{args.world}, features: {features}")  # fmt: skip
    print(
        f"world: {world}; pool {args.pool} prompts x M={args.candidates}, K={args.k} ({pairs} comparisons a ranking); "
        f"prompts chosen by: {args.tasks}; {args.seeds} seeds; {seconds:.0f}s"
    )
    print(f"held-out accuracy (mean over seeds; best achievable {best:.4f}) at rankings: " + ", ".join(map(str, marks)))
    for method, curve in mean.items():
        at = dict(curve)
        print(f"  {method:<13}" + "  ".join(f"{at[n]:.4f}" for n in marks))
    target = mean["random"][-1][1]
    print(f"rankings to reach random's final accuracy {target:.4f} (random used {args.budget}):")
    for method in mean:
        per_seed = [needed(c, c_random[-1][1]) for c, c_random in zip(curves[method], curves["random"])]
        n = needed(mean[method], target)
        seeds = ", ".join(f"{x:.0f}" for x in per_seed)
        print(
            f"  {method:<13}{n:7.0f} rankings = {n / args.budget:.2f}x random ({n * pairs:.0f} comparisons); "
            f"per seed vs that seed's random: {seeds}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
