"""K-wise reward training vs TRL's RewardTrainer on the pairs expanded from the same rankings, same run.

    python benchmarks/reward_kwise.py                       # builtin:small-llama (~3.5M params), CPU
    python benchmarks/reward_kwise.py --ours-epochs 4       # (a) trained longer than (b): accuracy at equal time
    python benchmarks/reward_kwise.py --prompts 200 --epochs 1 --model builtin:tiny-llama   # a quick look

Both start from the same base and the same head init, train in full on the same K=4 synthetic
rankings (reward/rankings/synthetic.py: a known rule plus annotator noise) for the same number of epochs
with the same learning rate and schedule and the same number of sequences per forward pass:
(a) `rlhf reward` (our stage): one forward pass over the K completions of each prompt, loss over
    all C(K, 2) comparisons (per_device_batch_size = B prompts = B*K sequences per pass);
(b) TRL's RewardTrainer on the C(K, 2) chosen/rejected pairs per prompt (B*K/2 pairs = B*K sequences
    per pass), which scores every completion K-1 times.
Throughput is comparisons (pairs) per second of training-loop time; held-out pairwise accuracy is
measured the same way for both (reward.model.score_texts on the held-out prompts). Prints the ratio; measured
figures live in docs/benchmarks.md (and the README's performance table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from alignment.config.loader import load_config  # noqa: E402
from alignment.runtime import tiny  # noqa: E402
from benchmarks import harness  # noqa: E402
from reward import data as rdata  # noqa: E402
from reward.model import load_reward_model, score_texts  # noqa: E402
from reward.rankings import synthetic  # noqa: E402


def held_out_accuracy(model, tokenizer, rankings: list[dict]) -> tuple[float, int]:
    """Pairwise accuracy over every strict comparison of the held-out rankings."""
    prompts = [r["prompt"] for r in rankings for _ in r["completions"]]
    completions = [c for r in rankings for c in r["completions"]]
    flat = score_texts(model, tokenizer, prompts, completions, batch_size=32)
    right = total = start = 0
    for r in rankings:
        s = flat[start : start + len(r["completions"])]
        start += len(r["completions"])
        for i, j in itertools.permutations(range(len(s)), 2):
            if r["ranks"][i] < r["ranks"][j]:
                total += 1
                right += s[i] > s[j]
    return right / total, total


def run_ours(args, data_path: str, out: str) -> dict:
    from reward.train import RewardConfig, train

    cfg = load_config(
        RewardConfig,
        None,
        [
            f"output_dir={out}",
            f"model.name_or_path={args.model}",
            "adapter.method=full",
            f"data.path={data_path}",
            f"data.test_size={args.test_size}",
            f"data.max_length={args.max_length}",
            "data.reference_size=64",
            f"train.learning_rate={args.lr}",
            f"train.per_device_batch_size={args.prompts_per_batch}",
            f"train.epochs={args.ours_epochs or args.epochs}",
            "train.lr_scheduler=linear",
            "train.log_steps=1000000",
            f"seed={args.seed}",
        ],
    )
    train(cfg)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    model, tokenizer = load_reward_model(out)
    return {"train_seconds": manifest["train_seconds"], "model": model, "tokenizer": tokenizer}


def run_trl(args, train_rankings: list[dict], out: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    pairs = [
        {"prompt": r["prompt"], "chosen": r["completions"][i], "rejected": r["completions"][j]}
        for r in train_rankings
        for i, j in itertools.permutations(range(len(r["completions"])), 2)
        if r["ranks"][i] < r["ranks"][j]
    ]
    base = tiny.resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(args.seed)  # the same head init as (a): our stage seeds the same way before building
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    config = RewardConfig(
        output_dir=out,
        per_device_train_batch_size=args.prompts_per_batch * 2,  # 2 sequences per pair: B*K sequences per pass at K=4
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        max_length=args.max_length,
        gradient_checkpointing=False,  # TRL's default is on; (a) does not checkpoint
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        report_to=[],
        logging_steps=1000000,
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = RewardTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer
    )
    result = trainer.train()
    return {
        "train_seconds": result.metrics["train_runtime"],
        "model": trainer.model.eval(),
        "tokenizer": tokenizer,
        "pairs": len(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:small-llama")
    parser.add_argument("--prompts", type=int, default=240, help="rankings (K=4) before the held-out split")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--ours-epochs", type=float, default=None, help="epochs for (a) only (default: --epochs)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--prompts-per-batch", type=int, default=8, help="(a) prompts per pass; (b) gets 2x pairs")
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(harness.machine(torch.get_num_threads()), flush=True)

    from alignment.cli import quiet_third_party

    quiet_third_party()
    tiny.resolve(args.model)  # build the builtin model once, outside both timings
    rows = synthetic.rankings(args.prompts, args.k, seed=args.seed)
    rankings = [rdata.to_ranking(r, f"synthetic:{i + 1}") for i, r in enumerate(rows)]
    train_rankings, held = rdata.split_by_prompt(rankings, args.test_size, args.seed)
    held_keys = {rdata.prompt_key(r["prompt"]) for r in held}
    best = synthetic.best_achievable([r for r in rows if r["prompt"] in held_keys])
    print(f"{len(train_rankings)} train rankings (K={args.k}), {len(held)} held out; model {args.model}; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "rankings.jsonl")
        with open(data_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        t0 = time.time()
        ours = run_ours(args, data_path, os.path.join(tmp, "ours"))
        print(f"(a) K-wise stage done in {time.time() - t0:.0f}s")
        t0 = time.time()
        trl = run_trl(args, train_rankings, os.path.join(tmp, "trl"))
        print(f"(b) TRL RewardTrainer done in {time.time() - t0:.0f}s")
        n_pairs = trl["pairs"]
        results = {}
        for name, run, epochs in (
            ("ours (K-wise)", ours, args.ours_epochs or args.epochs),
            ("TRL (pairs)", trl, args.epochs),
        ):
            acc, total = held_out_accuracy(run["model"], run["tokenizer"], held)
            results[name] = {
                "epochs": epochs,
                "train_seconds": run["train_seconds"],
                "pairs_per_second": n_pairs * epochs / run["train_seconds"],
                "accuracy": acc,
            }
    print(f"\nheld-out: {total} pairs; best achievable under the labels' noise {best['empirical']:.3f}")
    print(f"{'':16} {'epochs':>6} {'train s':>8} {'pairs/s':>9} {'accuracy':>9}")
    for name, r in results.items():
        print(f"{name:16} {r['epochs']:6g} {r['train_seconds']:8.1f} {r['pairs_per_second']:9.1f} {r['accuracy']:9.3f}")
    a, b = results["ours (K-wise)"], results["TRL (pairs)"]
    ratio = a["pairs_per_second"] / b["pairs_per_second"]
    print(f"\nspeed-up (comparisons/s, K-wise vs TRL pairs) at K={args.k}: {ratio:.2f}x; "
          f"accuracy {a['accuracy']:.3f} vs {b['accuracy']:.3f}")  # fmt: skip
    print(f"wall-clock training time, TRL / ours: {b['train_seconds'] / a['train_seconds']:.2f}x")
    print(json.dumps({"k": args.k, "ratio": ratio, "accuracy_ours": a["accuracy"], "accuracy_trl": b["accuracy"],
                      "best_achievable": best["empirical"], "model": args.model}))  # fmt: skip


if __name__ == "__main__":
    main()
