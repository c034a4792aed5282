"""Every method on every world, with the shipped defaults: gold win rate over SFT, gain, KL and the samples' health.

    python benchmarks/worlds.py                                  # 7 worlds x 3 seeds (42, 3, 11): ~1 h on 2 cores
    python benchmarks/worlds.py --worlds reviews support_chat --seeds 42     # a subset (CI runs two worlds)
    python benchmarks/worlds.py --from docs/worlds     # the table again from finished runs, nothing trained

Each (world, seed) is one `rlhf demo world=W seed=S` run, exactly as a user would type it (every stage with its
shipped config and the demo's settings; no setting depends on the world). The table gives, per world and method,
the mean over seeds of the gold win rate over SFT (± the standard error over seeds; one seed: the evaluation's own),
the gold gain, the KL to SFT (nats per completion), the EOS rate and broken-character rate (each beside SFT's) and
the mean length in tokens. A cell is healthy when its EOS rate is within 5 points of SFT's, its broken-character rate
at most SFT's + 1 point, its share of empty answers at most SFT's + 5 points and its KL under the budget
(alignment/runtime/health.py, HealthConfig.kl_budget), at every seed. The acceptance: every cell wins >= 60% and is healthy, every method's family mean >= 70%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from alignment.assets.worlds import WORLDS  # noqa: E402
from alignment.demo import METHODS  # noqa: E402
from alignment.runtime.health import HealthConfig, is_healthy  # noqa: E402
from benchmarks import harness  # noqa: E402

SEEDS = (42, 3, 11)
MIN_CELL, MIN_MEAN = 0.60, 0.70


def run_demo(world: str, seed: int, out: str, python: str) -> dict:
    """`rlhf demo world=W seed=S` into out/W-S (kept: a finished run is read, not trained again); demo.json."""
    folder = os.path.join(out, f"{world}-{seed}")
    result = os.path.join(folder, "demo.json")
    if not os.path.isfile(result):
        log = folder + ".log"
        os.makedirs(out, exist_ok=True)
        started = time.time()
        with open(log, "w") as f:
            # the blind campaign comes after the evaluation and is not in the table: it is left out
            cmd = [python, "-m", "alignment", "demo", f"world={world}", f"seed={seed}", f"output_dir={folder}"]
            cmd.append("campaign=false")
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        if code != 0:
            raise SystemExit(f"demo world={world} seed={seed} failed (exit {code}); log: {log}")
        print(f"  {world} seed {seed}: {(time.time() - started) / 60:.1f} min", flush=True)
    with open(result) as f:
        return json.load(f)


def sft_health(folder: str) -> dict:
    with open(os.path.join(folder, "eval", "eval.json")) as f:
        return json.load(f)["policies"]["sft"]


def cell(runs: list[tuple[dict, dict]], method: str, budget: float) -> dict:
    """One world x method over seeds: means, the win rate's spread, and whether every seed was healthy."""
    rows = [(demo["methods"][method], sft) for demo, sft in runs]
    wins = [m["win_rate"] for m, _ in rows]
    mean = sum(wins) / len(wins)
    if len(wins) > 1:
        spread = math.sqrt(sum((w - mean) ** 2 for w in wins) / (len(wins) - 1) / len(wins))
    else:
        spread = rows[0][0]["win_rate_stderr"]
    average = lambda key: sum(m[key] for m, _ in rows) / len(rows)  # noqa: E731
    sft = [s for _, s in rows]
    return {
        "win_rate": mean, "stderr": spread, "wins": wins, "gain": average("gold_gain"), "kl": average("kl"),
        "eos_rate": average("eos_rate"), "sft_eos_rate": sum(s["eos_rate"] for s in sft) / len(sft),
        "broken_rate": average("broken_rate"), "sft_broken_rate": sum(s["broken_rate"] for s in sft) / len(sft),
        "length": average("mean_length"),
        "healthy": all(is_healthy(m, s, m["kl"], budget) for m, s in rows),
    }  # fmt: skip


def table(cells: dict, methods: list[str], worlds: list[str]) -> list[str]:
    """The markdown table, world x method, then each method's family mean."""
    head = "| world | method | gold win rate over SFT | gain | KL | EOS (SFT) | broken (SFT) | length | healthy |"
    lines = [head, "|" + " --- |" * 9]
    for world in worlds:
        for method in methods:
            c = cells[world][method]
            lines.append(
                f"| {world} | {METHODS[method][0]} | {c['win_rate']:.1%} ± {c['stderr']:.1%} | {c['gain']:+.2f} | "
                f"{c['kl']:.2f} | {c['eos_rate']:.2f} ({c['sft_eos_rate']:.2f}) | {c['broken_rate']:.1%} "
                f"({c['sft_broken_rate']:.1%}) | {c['length']:.1f} | {'yes' if c['healthy'] else '**no**'} |"
            )
    lines += ["", "| method | family mean win rate | worst cell | cells healthy |", "| --- | --- | --- | --- |"]
    for method in methods:
        cs = [cells[w][method] for w in worlds]
        mean = sum(c["win_rate"] for c in cs) / len(cs)
        worst = min(cs, key=lambda c: c["win_rate"])
        name = next(w for w in worlds if cells[w][method] is worst)
        healthy = sum(c["healthy"] for c in cs)
        lines.append(f"| {METHODS[method][0]} | {mean:.1%} | {worst['win_rate']:.1%} ({name}) | {healthy}/{len(cs)} |")
    return lines


def verdict(cells: dict, methods: list[str], worlds: list[str]) -> list[str]:
    """What misses the acceptance, one line each ([] when everything holds)."""
    misses = []
    for method in methods:
        cs = {w: cells[w][method] for w in worlds}
        mean = sum(c["win_rate"] for c in cs.values()) / len(cs)
        if mean < MIN_MEAN:
            misses.append(f"{method}: family mean {mean:.1%} < {MIN_MEAN:.0%}")
        for w, c in cs.items():
            if c["win_rate"] < MIN_CELL or not c["healthy"]:
                misses.append(f"{method} on {w}: win {c['win_rate']:.1%}, healthy {c['healthy']}")
    return misses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "worlds"), help="where the demo runs go (kept)")
    p.add_argument("--from", dest="source", help="read finished runs from this folder instead of --out")
    p.add_argument("--json", help="also write the cells as JSON here")
    args = p.parse_args(argv)
    out = os.path.abspath(args.source or args.out)
    budget = HealthConfig().kl_budget
    print(harness.machine(), flush=True)
    print(f"worlds: {len(args.worlds)} worlds x {len(args.seeds)} seeds into {out}", flush=True)
    cells = {}
    for world in args.worlds:
        runs = []
        for seed in args.seeds:
            demo = run_demo(world, seed, out, sys.executable)
            runs.append((demo, sft_health(os.path.join(out, f"{world}-{seed}"))))
        cells[world] = {m: cell(runs, m, budget) for m in args.methods}
    lines = table(cells, args.methods, args.worlds)
    print("\n".join(["", *lines, ""]))
    misses = verdict(cells, args.methods, args.worlds)
    print("acceptance: " + ("met" if not misses else "not met\n  " + "\n  ".join(misses)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seeds": args.seeds, "cells": cells, "misses": misses}, f, indent=1)
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
