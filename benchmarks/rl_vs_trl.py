"""`rlhf ppo algorithm=rloo|grpo` vs TRL's `RLOOTrainer` / `GRPOTrainer` with a `peft_config`, in one run.

    python benchmarks/rl_vs_trl.py                              # 84M Llama, fp32, CPU, 8 completions per step, 32 tokens
    python benchmarks/rl_vs_trl.py --layers 2 --hidden 256 --episodes 32   # a quick look

Both sides run in the project's venv (TRL 1.16 ships both trainers), each in its own fresh process, one
after the other, on the same model files (a random-init Llama with the builtin tokenizer), the
same prompts, the same Python reward function (`reward` below), k = 4 samples per prompt, 8 completions
per optimizer step, one optimizer step per generation batch (TRL's `num_iterations=1`; ours `ppo.epochs=1`,
one minibatch, where ours and TRL's GRPO take the old log-probs from the training forward; TRL's RLOO scores
them first, for its KL reward), the same response length, temperature, learning rate and KL coefficient
(RLOO: the KL as a reward penalty on both sides; GRPO: TRL's k3 term in the loss, ours `kl.mode=loss`). The
policy is a LoRA adapter (r=16 on every linear layer) and the reference the base with the adapter off on
both sides. Threads: `--threads` (default 1). Peak memory is each process's peak RSS (getrusage). Episodes/s is
completions over the training-loop time (ours: the sum of the update times it logs; TRL: `trainer.train()`).
Measured figures live in docs/benchmarks.md (and the README's performance table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import harness  # noqa: E402
from benchmarks.harness import peak_rss_mb  # noqa: E402
from benchmarks.ppo_vs_trl import save_base  # noqa: E402

K = 4  # samples per prompt


def reward(prompts, completions, **kwargs) -> list[float]:
    """The shared reward: positive minus negative review words (the demo's hidden gold preference)."""
    from alignment.assets.gold import gold_reward

    return [gold_reward(c if isinstance(c, str) else c[-1]["content"]) for c in completions]


def prepare(args, work: str) -> None:
    """A random-init Llama with the builtin tokenizer (ppo_vs_trl.py's), and the builtin prompts, on disk."""
    from alignment.assets import reviews

    _, n_params = save_base(args, work)
    with open(os.path.join(work, "prompts.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in reviews.prompts("train"))
    print(f"model: Llama, {n_params / 1e6:.1f}M parameters, fp32, {args.layers} layers, hidden {args.hidden}")


def worker_ours(args, work: str, algorithm: str) -> dict:
    sys.path.insert(0, ROOT)
    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig
    from alignment.ppo.train import train
    from alignment.runtime.tracking import read_metrics

    out = os.path.join(work, f"ours-{algorithm}")
    cfg = load_config(PPOConfig, None, [
        f"output_dir={out}", f"algorithm={algorithm}", f"model.name_or_path={os.path.join(work, 'base')}",
        "model.dtype=float32", "reward.function=benchmarks.rl_vs_trl:reward",
        f"data.path={os.path.join(work, 'prompts.jsonl')}", "policy.r=16", "policy.alpha=32",
        f"rollout.per_device_batch_size={args.batch}", f"rollout.samples_per_prompt={K}",
        f"rollout.response_length={args.response_length}", "rollout.temperature=1.0",
        "rollout.missing_eos_penalty=null", "ppo.epochs=1", "ppo.num_minibatches=1",
        f"train.total_episodes={args.episodes}", "train.learning_rate=1e-5", "train.sample_steps=0",
        "kl.coef=0.05", f"kl.mode={'loss' if algorithm == 'grpo' else 'reward'}",
        "loss.aggregation=token_mean", "grpo.scale=group",
    ])  # fmt: skip
    train(cfg)
    rows = read_metrics(out)
    loop = sum(args.batch / r["time/episodes_per_second"] for r in rows)
    return {"episodes": rows[-1]["train/episodes"], "loop_seconds": loop, "peak_rss_mb": peak_rss_mb()}


def worker_trl(args, work: str, algorithm: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(work, "base"))
    with open(os.path.join(work, "prompts.jsonl")) as f:
        dataset = Dataset.from_list([{"prompt": json.loads(line)["prompt"]} for line in f])
    policy = AutoModelForCausalLM.from_pretrained(os.path.join(work, "base"), dtype=torch.float32)
    Config, Trainer = (GRPOConfig, GRPOTrainer) if algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    config = Config(
        output_dir=os.path.join(work, f"trl-{algorithm}"), use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, num_generations=K,
        max_completion_length=args.response_length, temperature=1.0, learning_rate=1e-5, beta=0.05,
        max_steps=args.episodes // args.batch, num_iterations=1, seed=42, disable_tqdm=True, logging_steps=1000,
    )  # fmt: skip
    trainer = Trainer(
        model=policy, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )  # fmt: skip
    start = time.time()
    trainer.train()
    loop = time.time() - start
    return {"episodes": config.max_steps * args.batch, "loop_seconds": loop, "peak_rss_mb": peak_rss_mb()}


def run_worker(side: str, algorithm: str, args, work: str) -> dict:
    result = harness.run_worker(os.path.abspath(__file__), f"{side}-{algorithm}", work, args.threads,
                                env={"PYTHONPATH": ROOT}, label=f"{side} {algorithm}", stage="ppo")  # fmt: skip
    result["episodes_per_second"] = result["episodes"] / result["loop_seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="completions per optimizer step (k = 4 per prompt)")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--algorithms", default="rloo,grpo")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run (the same for both)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch % K:
        parser.error(f"--batch must be a multiple of k = {K}")
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        side, algorithm = args.worker.split("-")
        result = (worker_trl if side == "trl" else worker_ours)(args, args.work, algorithm)
        print(json.dumps(result))
        return

    print(harness.machine(args.threads), flush=True)
    with tempfile.TemporaryDirectory(prefix="rl-vs-trl-") as work:
        prepare(args, work)
        print(
            f"{args.batch} completions per step (k = {K}), response length {args.response_length}, "
            f"{args.episodes} episodes, CPU fp32, {args.threads} thread(s)",
            flush=True,
        )
        for algorithm in args.algorithms.split(","):
            ours = run_worker("ours", algorithm, args, work)
            trl = run_worker("trl", algorithm, args, work)
            for name, r in [(f"rlhf ppo algorithm={algorithm}", ours), (f"trl {algorithm.upper()}Trainer + peft", trl)]:
                print(f"  {name:<32} {r['episodes']:>4} episodes  {r['episodes_per_second']:6.2f} episodes/s  "
                      f"peak RSS {r['peak_rss_mb']:8.0f} MB")  # fmt: skip
            print(f"{algorithm}: episodes/s ratio (ours / TRL) {ours['episodes_per_second'] / trl['episodes_per_second']:.2f}x, "
                  f"memory ratio {ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x; load average {harness.load_average():.1f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
