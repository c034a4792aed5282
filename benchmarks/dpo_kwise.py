"""Listwise (Plackett-Luce) DPO on K-wise rankings vs sigmoid DPO on the same rankings expanded into pairs, one run.

    nice -n 5 python benchmarks/dpo_kwise.py                                # builtin:tiny-llama, K = 4, CPU
    nice -n 5 python benchmarks/dpo_kwise.py --rankings 64 --model builtin:tiny-llama   # a quick look

Both are `rlhf dpo` (LoRA on the same base, reference = adapter off, same learning rate, schedule and
epochs) on the same synthetic K = 4 review rankings (reward/rankings/synthetic.py), with the same number
of sequences per forward pass (4B):
(a) `loss.type=plackett_luce` on the rankings: B prompts per micro-batch, each ranking's K completions in
    one pass (plus one reference pass with the adapter off);
(b) `loss.type=sigmoid` on the C(K, 2) = 6 chosen/rejected pairs of every ranking (TRL's pairwise format):
    2B pairs per micro-batch, so each completion goes through the model K - 1 = 3 times per epoch.
Prints forward passes (policy + reference) and training-loop seconds per ranking, and the held-out pairwise
accuracy of the implicit reward (`eval/rewards/accuracies`, the same comparisons for both), and the ratio;
measured figures live in docs/benchmarks.md (and the README's performance table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def expand(rows: list[dict]) -> list[dict]:
    """Every strict pair (better, worse) of every ranking as a TRL pairwise row."""
    pairs = []
    for r in rows:
        for i, j in itertools.permutations(range(len(r["ranks"])), 2):
            if r["ranks"][i] < r["ranks"][j]:
                pairs.append({"prompt": r["prompt"], "chosen": r["completions"][i], "rejected": r["completions"][j]})
    return pairs


def run(args, work: str, name: str, data: str, eval_data: str, loss: str, batch: int) -> dict:
    out = os.path.join(work, name)
    cmd = [sys.executable, "-m", "alignment", "dpo", f"output_dir={out}", f"model.name_or_path={args.model}",
           f"data.path={data}", f"data.eval_path={eval_data}", "data.max_length=96", "data.max_prompt_length=32",
           f"loss.type={loss}", "loss.beta=0.1", "adapter.alpha=64", f"train.per_device_batch_size={batch}",
           f"train.epochs={args.epochs}", "train.learning_rate=5e-4", "train.log_steps=1000000", "seed=0"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="builtin:tiny-llama")
    parser.add_argument("--rankings", type=int, default=256, help="training rankings (K = 4)")
    parser.add_argument("--eval-rankings", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4, help="B: rankings per pass in (a); (b) takes 2B pairs")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run (the same for both)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from benchmarks import harness
    from reward.rankings import synthetic

    print(harness.machine(args.threads), flush=True)

    rows = synthetic.rankings(args.rankings + args.eval_rankings, k=4, seed=0)
    train_rows, eval_rows = rows[: args.rankings], rows[args.rankings :]
    with tempfile.TemporaryDirectory(prefix="dpo-kwise-") as work:
        kwise = run(args, work, "kwise", write(os.path.join(work, "kwise.jsonl"), train_rows),
                    write(os.path.join(work, "kwise_eval.jsonl"), eval_rows), "plackett_luce", args.batch)  # fmt: skip
        pairs = run(args, work, "pairs", write(os.path.join(work, "pairs.jsonl"), expand(train_rows)),
                    write(os.path.join(work, "pairs_eval.jsonl"), expand(eval_rows)), "sigmoid", 2 * args.batch)  # fmt: skip
    n = len(train_rows)
    print(f"{n} rankings of K = 4 ({len(expand(train_rows))} pairs), {args.epochs:g} epoch(s), {4 * args.batch} "
          f"sequences per forward pass, model {args.model}, {args.threads} thread(s)")  # fmt: skip
    print(f"{'':<34}{'passes/ranking':>16}{'s/ranking':>12}{'held-out acc':>14}")
    results = []
    for name, m in (("(a) Plackett-Luce on rankings", kwise), ("(b) sigmoid DPO on expanded pairs", pairs)):
        per = m["train_seconds"] / (n * args.epochs)
        passes = 2 * m["steps"] / (n * args.epochs)  # policy + reference pass per micro-batch
        results.append(per)
        print(f"{name:<34}{passes:>16.2f}{per:>12.4f}{m['metrics']['eval/rewards/accuracies']:>14.3f}")
    print(f"speed-up per ranking (pairs / K-wise wall time): {results[1] / results[0]:.2f}x")


if __name__ == "__main__":
    main()
