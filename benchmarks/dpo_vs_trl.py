"""`rlhf dpo` against TRL's DPOTrainer with a PEFT LoraConfig: same model, data and settings, one run.

    nice -n 5 python benchmarks/dpo_vs_trl.py                          # ~20M-parameter Llama, LoRA r=16, CPU fp32
    nice -n 5 python benchmarks/dpo_vs_trl.py --pairs 64 --hidden 256  # a quick look

Both train one epoch of the same TRL pairwise rows (prompt/chosen/rejected, from the synthetic reviews
rankings: best against worst completion) with sigmoid DPO at beta 0.1, LoRA r=16 on every linear layer of
the same random-init Llama (reference = the base with the adapter off on both sides), the same batch size,
max length, learning rate and schedule, each in its own fresh process with `--threads` torch threads.
Throughput is the non-padding tokens of the epoch (prompt + chosen + rejected, as our stage encodes them)
over each framework's own training-loop time (our manifest's train_seconds, TRL's train_runtime); peak
memory is each process's peak RSS (getrusage). Prints both and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import harness  # noqa: E402
from benchmarks.harness import peak_rss_mb  # noqa: E402


def prepare(args, work: str) -> int:
    """The model + tokenizer folder and the pairwise data; returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.runtime.tiny import build_tokenizer
    from reward.rankings import synthetic

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.hidden * 3, num_hidden_layers=args.layers,
        num_attention_heads=max(4, args.hidden // 64), max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(os.path.join(work, "model"))
    tok.save_pretrained(os.path.join(work, "model"))
    with open(os.path.join(work, "pairs.jsonl"), "w") as f:
        for row in synthetic.rankings(args.pairs, k=4, seed=0):
            best, worst = row["ranks"].index(min(row["ranks"])), row["ranks"].index(max(row["ranks"]))
            pair = {"prompt": row["prompt"], "chosen": row["completions"][best], "rejected": row["completions"][worst]}
            f.write(json.dumps(pair) + "\n")
    return sum(p.numel() for p in model.parameters())


def worker_ours(args, work: str) -> dict:
    sys.path.insert(0, ROOT)
    from alignment.config.loader import load_config
    from alignment.dpo import data as ddata
    from alignment.dpo.config import DPOConfig
    from alignment.dpo.train import train
    from alignment.runtime.models import load_base_tokenizer

    out = os.path.join(work, "ours")
    cfg = load_config(DPOConfig, None, [
        f"output_dir={out}", f"model.name_or_path={os.path.join(work, 'model')}", "model.dtype=float32",
        f"data.path={os.path.join(work, 'pairs.jsonl')}", "data.test_size=0", f"data.max_length={args.max_length}",
        f"data.max_prompt_length={args.max_length // 2}", "loss.type=sigmoid", "loss.beta=0.1",
        f"loss.precompute_ref={str(args.precompute_ref).lower()}", f"adapter.r={args.r}", f"adapter.alpha={2 * args.r}",
        f"train.per_device_batch_size={args.batch}", "train.epochs=1", "train.learning_rate=5e-5",
        "train.lr_scheduler=linear", "train.log_steps=1000000", "seed=0",
    ])  # fmt: skip
    train(cfg)
    tokenizer = load_base_tokenizer(cfg.model)
    examples = [ddata.encode(tokenizer, r, cfg.data) for r in ddata.load_data(cfg.data, 0)[0]]
    tokens = sum(len(ids) for e in examples for ids in e["input_ids"])
    with open(os.path.join(out, "manifest.json")) as f:
        seconds = json.load(f)["train_seconds"]
    return {"seconds": seconds, "tokens": tokens, "peak_rss_mb": peak_rss_mb()}


def worker_trl(args, work: str) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(os.path.join(work, "model"))
    model = AutoModelForCausalLM.from_pretrained(os.path.join(work, "model"))
    data = load_dataset("json", data_files=os.path.join(work, "pairs.jsonl"), split="train")
    config = DPOConfig(
        output_dir=os.path.join(work, "trl"), per_device_train_batch_size=args.batch, num_train_epochs=1,
        learning_rate=5e-5, lr_scheduler_type="linear", max_length=args.max_length, beta=0.1, loss_type=["sigmoid"],
        precompute_ref_log_probs=args.precompute_ref, logging_steps=10**6, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    peft = LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tok, peft_config=peft)
    out = trainer.train()
    return {"seconds": out.metrics["train_runtime"], "steps": out.global_step, "peak_rss_mb": peak_rss_mb()}


def run_worker(side: str, args, work: str) -> dict:
    return harness.run_worker(os.path.abspath(__file__), side, work, args.threads, env={"CUDA_VISIBLE_DEVICES": ""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--precompute-ref", action="store_true", help="reference log-probs in one pass first (both)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run (the same for both)")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps((worker_ours if args.worker == "ours" else worker_trl)(args, args.work)))
        return

    with tempfile.TemporaryDirectory(prefix="dpo-vs-trl-") as work:
        params = prepare(args, work)
        ours = run_worker("ours", args, work)
        trl = run_worker("trl", args, work)
    tokens = ours["tokens"]
    print(f"model: Llama {params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers), LoRA r={args.r}, "
          f"{args.pairs} pairs, {tokens} real tokens, batch {args.batch}, max_length {args.max_length}, CPU fp32, "
          f"{args.threads} thread(s)" + (", reference precomputed" if args.precompute_ref else ""))  # fmt: skip
    print(f"{'':<26}{'train s':>10}{'tokens/s':>12}{'peak RSS MB':>14}")
    for name, r in (("rlhf dpo", ours), ("TRL DPOTrainer + peft", trl)):
        print(f"{name:<26}{r['seconds']:>10.1f}{tokens / r['seconds']:>12.0f}{r['peak_rss_mb']:>14.0f}")
    print(f"throughput ratio (ours / TRL tokens/s): {trl['seconds'] / ours['seconds']:.2f}x")
    print(f"memory ratio (ours / TRL peak RSS): {ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
