"""`rlhf dpo` against TRL's DPOTrainer with a PEFT LoraConfig, pairwise or K-wise: same model, data and settings.

    nice -n 5 python benchmarks/dpo_vs_trl.py                              # ~20M-parameter Llama, LoRA r=16, CPU fp32
    nice -n 5 python benchmarks/dpo_vs_trl.py --rankings 64 --hidden 256   # a quick look
    nice -n 5 python benchmarks/dpo_vs_trl.py --shape qwen-vocab           # Qwen2.5's 151,936-token vocabulary
    nice -n 5 python benchmarks/dpo_vs_trl.py --loss plackett_luce         # K-wise: ours on rankings, TRL on their pairs
    nice -n 5 python benchmarks/dpo_vs_trl.py --shape qwen-vocab --loss plackett_luce --trl-pairs best-worst

The data are `--rankings` synthetic review rankings of K = `--k` completions (reward/rankings/synthetic.py).
- `--loss sigmoid` (pairwise): both sides train the same TRL pairwise rows (prompt/chosen/rejected: the best
  against the worst completion of each ranking) with sigmoid DPO, `--batch` pairs per micro-batch.
- `--loss plackett_luce` (K-wise): ours trains `loss.type=plackett_luce` on the rankings whole, `--batch` rankings
  (B*K sequences) per micro-batch. TRL has no K-wise DPO, so it trains sigmoid DPO on the pairwise rows of the same
  rankings: `--trl-pairs all` (the default) every strict pair, C(K, 2) per ranking, the comparisons the ranking
  states (each completion goes through the model K - 1 times per epoch); `--trl-pairs best-worst` one pair per
  ranking (less data, and less work than ours). TRL gets B*K/2 pairs per micro-batch: B*K sequences per pass on
  both sides, so the optimizer steps differ (printed).
Both: beta 0.1, LoRA r = `--r` (alpha 2r) on every linear layer of the same random-init model, reference = the
base with the adapter off, the same max length (our side also cuts prompts to half of it), learning rate 5e-5 with
a linear schedule, one epoch, seed 0, each side in its own fresh process with `--threads` torch threads. Our
stage's health samples (completions it generates after training; TRL's trainer generates none) are off unless
`--health-samples N`: they fall outside both timings but not outside the process's peak RSS.
Shapes (`--shape`): `shipped`, a Llama of `--hidden` and `--layers` under the builtin tokenizer;
`qwen-vocab`, the model of `ppo_vs_trl.py --shape qwen-vocab`: a random-init Qwen2 with Qwen2.5's 151,936-token
vocabulary (tied embeddings) on a small trunk (hidden 256, 2 layers), where the LM head is most of the work and
the memory; token ids still come from the builtin tokenizer (its ids are valid rows of the larger vocabulary and
nothing decodes them), so both shapes train on the same tokens.
Throughput: tokens/s is the real (non-padding) tokens of the rows our side trains on (prompt + completion for
each completion, as our stage encodes them) over each side's training-loop time (our manifest's train_seconds,
TRL's train_runtime): one numerator for both, so its ratio is the ratio of times. Also printed: the tokens each
side puts through the model (TRL's own count, attention masks summed) and their rate. Peak memory is each
process's peak RSS (getrusage). Prints both, the ratios, the issue's aim (peak RSS <= 0.5x TRL's at >= 1.3x its
tokens/s) and the machine line. Measured figures live in docs/benchmarks.md (and the README's performance table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import harness  # noqa: E402
from benchmarks.harness import peak_rss_mb  # noqa: E402

BETA, LEARNING_RATE = 0.1, 5e-5


# ----------------------------------------------------------------------------------------------
# Setup (parent process): the model folder, our rows and TRL's rows


def model_config(args, tokenizer):
    """The benchmark model: the shipped Llama, or ppo_vs_trl.py's small Qwen2 trunk under Qwen2.5's vocabulary."""
    from transformers import LlamaConfig

    if args.shape == "qwen-vocab":
        from benchmarks.ppo_vs_trl import model_config as qwen_vocab_config

        return qwen_vocab_config(args, tokenizer)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=max(4, args.hidden // 64),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def pairs_of(row: dict, which: str) -> list[dict]:
    """TRL pairwise rows of one ranking (rank 1 = best): every strict pair (`all`) or the best against the worst."""
    ranks, texts = row["ranks"], row["completions"]
    if which == "best-worst":
        indices = [(ranks.index(min(ranks)), ranks.index(max(ranks)))]
    else:
        indices = [(i, j) for i, j in itertools.permutations(range(len(ranks)), 2) if ranks[i] < ranks[j]]
    return [{"prompt": row["prompt"], "chosen": texts[i], "rejected": texts[j]} for i, j in indices]


def prepare(args, work: str):
    """The model + tokenizer folder, ours.jsonl (what our stage trains on) and trl.jsonl; returns the model config,
    its parameter count and TRL's pair count."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignment.runtime.tiny import build_tokenizer
    from reward.rankings import synthetic

    tokenizer = build_tokenizer()  # the builtin tiny models' tokenizer (ppo_vs_trl.py's, via builtin:tiny-llama)
    config = model_config(args, tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(os.path.join(work, "model"))
    tokenizer.save_pretrained(os.path.join(work, "model"))
    rankings = synthetic.rankings(args.rankings, k=args.k, seed=0)
    trl_rows = [p for r in rankings for p in pairs_of(r, args.trl_pairs)]
    ours = rankings if args.loss == "plackett_luce" else trl_rows
    for name, rows in (("ours", ours), ("trl", trl_rows)):
        with open(os.path.join(work, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return config, sum(p.numel() for p in model.parameters()), len(trl_rows)


def trl_batch(args) -> int:
    """TRL's pairs per micro-batch: as many sequences per pass as ours (pairwise: the same `--batch` pairs)."""
    return args.batch if args.loss == "sigmoid" else args.batch * args.k // 2


# ----------------------------------------------------------------------------------------------
# Workers (each in a fresh process; print one JSON line)


def worker_ours(args, work: str) -> dict:
    from alignment.config.loader import load_config
    from alignment.dpo import data as ddata
    from alignment.dpo.config import DPOConfig
    from alignment.dpo.train import train
    from alignment.runtime.models import load_base_tokenizer

    out = os.path.join(work, "ours")
    overrides = [
        f"output_dir={out}",
        f"model.name_or_path={os.path.join(work, 'model')}",
        "model.dtype=float32",
        f"data.path={os.path.join(work, 'ours.jsonl')}",
        "data.test_size=0",
        f"data.max_length={args.max_length}",
        f"data.max_prompt_length={args.max_length // 2}",
        f"loss.type={args.loss}",
        f"loss.beta={BETA}",
        f"loss.precompute_ref={str(args.precompute_ref).lower()}",
        f"adapter.r={args.r}",
        f"adapter.alpha={2 * args.r}",
        f"train.per_device_batch_size={args.batch}",
        "train.epochs=1",
        f"train.learning_rate={LEARNING_RATE}",
        "train.lr_scheduler=linear",
        "train.log_steps=1000000",
        f"health.samples={args.health_samples}",
        "seed=0",
    ]
    cfg = load_config(DPOConfig, None, overrides)
    train(cfg)
    tokenizer = load_base_tokenizer(cfg.model)
    rankings = ddata.load_data(cfg.data, cfg.loss.ties, cfg.seed)[0]
    tokens = sum(len(ids) for r in rankings for ids in ddata.encode(tokenizer, r, cfg.data)["input_ids"])
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    return {
        "seconds": manifest["train_seconds"],
        "steps": manifest.get("steps"),
        "tokens": tokens,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_trl(args, work: str) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(work, "model"))
    model = AutoModelForCausalLM.from_pretrained(os.path.join(work, "model"))
    data = load_dataset("json", data_files=os.path.join(work, "trl.jsonl"), split="train")
    config = DPOConfig(
        output_dir=os.path.join(work, "trl"),
        per_device_train_batch_size=trl_batch(args),
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        max_length=args.max_length,
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=args.precompute_ref,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft = LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=peft)
    out = trainer.train()
    return {
        "seconds": out.metrics["train_runtime"],
        "steps": out.global_step,
        "tokens": getattr(trainer, "_total_train_tokens", None),  # real tokens through the policy, TRL's own count
        "peak_rss_mb": peak_rss_mb(),
    }


def run_worker(side: str, args, work: str) -> dict:
    return harness.run_worker(
        os.path.abspath(__file__), side, work, args.threads, env={"CUDA_VISIBLE_DEVICES": ""}, stage="dpo"
    )


# ----------------------------------------------------------------------------------------------
# Parent: arguments, both runs, the report


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape",
        choices=["shipped", "qwen-vocab"],
        default="shipped",
        help="shipped: the Llama of --hidden/--layers; qwen-vocab: Qwen2.5's 151,936-token vocabulary on a small "
        "Qwen2 trunk (--hidden/--layers ignored)",
    )
    parser.add_argument(
        "--loss",
        choices=["sigmoid", "plackett_luce"],
        default="sigmoid",
        help="ours: sigmoid on pairs, or plackett_luce on the K-wise rankings (TRL: sigmoid on pairs either way)",
    )
    parser.add_argument(
        "--kwise", dest="loss", action="store_const", const="plackett_luce", help="the same as --loss plackett_luce"
    )
    parser.add_argument(
        "--trl-pairs",
        choices=["all", "best-worst"],
        default=None,
        help="TRL's rows from each ranking (default: all with --loss plackett_luce; best-worst with sigmoid, where "
        "both sides train them)",
    )
    parser.add_argument(
        "--rankings", "--pairs", type=int, default=256, help="synthetic rankings (sigmoid: one pair each)"
    )
    parser.add_argument("--k", type=int, default=4, help="completions per ranking")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="per micro-batch: pairs (sigmoid) or rankings (K-wise)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--precompute-ref", action="store_true", help="reference log-probs in one pass first (both)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run (the same for both)")
    parser.add_argument(
        "--health-samples",
        type=int,
        default=0,
        help="our stage's health.samples (completions sampled after training to check their health; shipped: 64); "
        "0 by default, since TRL's DPOTrainer samples nothing",
    )
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.trl_pairs = args.trl_pairs or ("all" if args.loss == "plackett_luce" else "best-worst")
    if args.loss == "sigmoid" and args.trl_pairs != "best-worst":
        parser.error("--trl-pairs all needs --loss plackett_luce (pairwise, both sides train the best-worst pairs)")
    if args.loss == "plackett_luce" and args.batch * args.k % 2:
        parser.error("--batch times --k must be even: TRL takes batch * k / 2 pairs per micro-batch")
    return args


def main() -> None:
    args = arguments()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps((worker_ours if args.worker == "ours" else worker_trl)(args, args.work)))
        return

    print(harness.machine(args.threads), flush=True)
    with tempfile.TemporaryDirectory(prefix="dpo-vs-trl-") as work:
        config, params, n_pairs = prepare(args, work)
        ours = run_worker("ours", args, work)
        trl = run_worker("trl", args, work)
    report(args, config, params, n_pairs, ours, trl)


def report(args, config, params: int, n_pairs: int, ours: dict, trl: dict) -> None:
    """The settings, one row per side, the tokens/s and peak RSS ratios and the issue's aim."""
    print(
        f"shape {args.shape}: {config.model_type} {params / 1e6:.1f}M params (hidden {config.hidden_size}, "
        f"{config.num_hidden_layers} layers, vocabulary {config.vocab_size:,}), LoRA r={args.r}, max_length "
        f"{args.max_length}, CPU fp32, {args.threads} thread(s), our health samples {args.health_samples}"
        + (", reference precomputed" if args.precompute_ref else "")
    )
    sequences = args.batch * (2 if args.loss == "sigmoid" else args.k)
    if args.loss == "sigmoid":
        data = f"{n_pairs} pairs (best vs worst of K={args.k} rankings), sigmoid DPO on both sides, batch {args.batch}"
    else:
        data = (
            f"{args.rankings} rankings of K={args.k}: ours plackett_luce on the rankings, batch {args.batch}; "
            f"TRL sigmoid on their {n_pairs} pairs ({args.trl_pairs}), batch {trl_batch(args)}"
        )
    print(f"data: {data}; {sequences} sequences per pass on each side; beta {BETA}, lr {LEARNING_RATE}, 1 epoch")
    tokens = ours["tokens"]
    print(f"tokens/s: {tokens:,} real tokens of our rows over each side's training-loop time")
    print(
        f"{'':<30}{'steps':>7}{'train s':>10}{'tokens/s':>11}{'model tokens':>14}{'model tok/s':>13}{'peak RSS MB':>13}"
    )
    for name, r in ((f"rlhf dpo ({args.loss})", ours), ("TRL DPOTrainer + peft", trl)):
        model_tokens = r["tokens"] or 0
        print(
            f"{name:<30}{r['steps'] or 0:>7}{r['seconds']:>10.1f}{tokens / r['seconds']:>11.0f}{model_tokens:>14,}"
            f"{model_tokens / r['seconds']:>13.0f}{r['peak_rss_mb']:>13.0f}"
        )
    speed, memory = trl["seconds"] / ours["seconds"], ours["peak_rss_mb"] / trl["peak_rss_mb"]
    print(f"tokens/s ratio (ours / TRL, the same {tokens:,} tokens): {speed:.2f}x")
    if trl["tokens"]:
        model_speed = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
        print(f"model tokens/s ratio (ours / TRL, what each put through the model): {model_speed:.2f}x")
    print(f"peak RSS ratio (ours / TRL): {memory:.2f}x")
    print(
        f"aim (peak RSS <= 0.5x TRL's at >= 1.3x its tokens/s): memory {'yes' if memory <= 0.5 else 'no'}, "
        f"speed {'yes' if speed >= 1.3 else 'no'}; load average {harness.load_average():.2f} at the end"
    )


if __name__ == "__main__":
    main()
