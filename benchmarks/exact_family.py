"""The exact-optimum check as a table: method x instance x beta x seed, each run's share of the achievable gain
J* - J(ref) and its KL to the optimal policy, every method with its shipped config (tests/oracles/exact_check.py).

    python benchmarks/exact_family.py                          # 5 methods x 4 instances x 3 betas x 3 seeds
    python benchmarks/exact_family.py --methods rloo grpo --seeds 0
    python benchmarks/exact_family.py --methods dpo dpo_kwise --preferences 8192    # does DPO lack data?
    python benchmarks/exact_family.py --methods dpo dpo_kwise --labels sampled    # one draw per label, not its law
    python benchmarks/exact_family.py --methods dpo_kwise --instances eos --betas 0.1 --override train.epochs=6
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.oracles import exact_check  # noqa: E402
from tests.oracles.instances import SHAPES, instance  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(exact_check.METHODS), choices=exact_check.METHODS)
    p.add_argument("--instances", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--betas", nargs="+", type=float, default=list(exact_check.BETAS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--preferences", type=int, default=exact_check.PREFERENCES, help="DPO's pairs or rankings per instance"
    )
    p.add_argument(
        "--labels", default="exact", choices=exact_check.LABELS, help="DPO's labels (see exact_check.LABELS)"
    )
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="a stage config override on top of the shipped config, to measure a change (repeatable)",
    )  # fmt: skip
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="exact-") as tmp:
        for method in args.methods:
            for shape in args.instances:
                for beta in args.betas:
                    for seed in args.seeds:
                        started = time.time()
                        r = exact_check.run(
                            method, instance(shape), beta, seed, pathlib.Path(tmp), preferences=args.preferences,
                            labels=args.labels, overrides=tuple(args.override),
                        )  # fmt: skip
                        print(f"{r.line()}  ({time.time() - started:.0f} s)", flush=True)
                        results.append(r)
    print("\n| method | instance | beta | gain reached (min over seeds) | KL(pi || pi*) (max) | its length (pi*) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in args.methods:
        for shape in args.instances:
            for beta in args.betas:
                rs = [r for r in results if (r.method, r.instance, r.beta) == (method, shape, beta)]
                worst, far = min(rs, key=lambda r: r.fraction), max(r.kl_to_optimum for r in rs)
                length = f"{worst.length:.2f} ({worst.optimum_length:.2f})"
                print(f"| {method} | {shape} | {beta} | {worst.fraction:.1%} | {far:.4f} | {length} |")
    failed = [r for r in results if r.fraction < 0.9]
    print(f"\n{len(results) - len(failed)} of {len(results)} runs reach 90% of the achievable gain")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
