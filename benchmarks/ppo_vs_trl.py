"""One-base PPO (`rlhf ppo`) vs the last TRL PPO (trl 0.29.1, `trl.experimental.ppo`, PEFT variant), same run.

    python benchmarks/ppo_vs_trl.py                           # 84M Llama, fp32, CPU, batch 8, 32 tokens, 64 episodes
    python benchmarks/ppo_vs_trl.py --layers 2 --episodes 16  # a quick look
    python benchmarks/ppo_vs_trl.py --shape qwen-vocab        # Qwen2.5's 151,936-token vocabulary, small trunk

TRL 0.29.1 is installed by this script into its own venv (benchmarks/.venv/trl-0.29.1, gitignored) with
`python -m venv` + `pip install torch==2.13.0 trl==0.29.1 transformers peft accelerate psutil`; it installs
beside transformers 5.24. Each side runs in its own fresh process, one after the other, on the same model
files (a random-init Llama: hidden 1024, 8 layers, intermediate 2048, the builtin tokenizer),
the same prompts, batch, response length, PPO epochs, temperature and episodes:
(a) ours: one frozen base carrying policy, value and reward LoRA adapters; reference = adapters off;
(a') the same with `value.share_with_policy=true`: one adapter and one backbone pass for policy and value (the
     trunk TRL's classic `AutoModelForCausalLMWithValueHead` shared), whose first minibatch's pass also gives the
     rollout's log-probs and values (`ppo.old_logprobs_from_update`), so there is no policy scoring pass;
(b) TRL with `peft_config` (its lightest setup): policy base + LoRA (reference = adapter off), plus a
    full reward model and a full, fully trained value model (TRL's PPO has no value/reward adapters).
Both use `--threads` torch threads (default 1: on shared CPU cores, extra threads spin against other
processes and timings stop meaning anything). Peak memory is each process's peak RSS (getrusage).
`--shape qwen-vocab` keeps everything but the model: a random-init Qwen2 (Qwen2.5's architecture and
151,936-token vocabulary, tied embeddings) with a trunk small enough for minutes on 2 CPU cores (hidden
256, 2 layers), where the vocabulary-wide logits are most of the memory; token ids still come from the
builtin tokenizer (the model samples any id, nothing decodes them).
Episodes/s is episodes over the training-loop time
(ours: the sum of the update times it logs; TRL: `trainer.train()`). Prints both ratios and the machine line;
measured figures live in docs/benchmarks.md (and the README's performance table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import harness  # noqa: E402
from benchmarks.harness import peak_rss_mb  # noqa: E402

TRL_VENV = os.path.join(ROOT, "benchmarks", ".venv", "trl-0.29.1")
QWEN_VOCAB = 151_936
TRL_PACKAGES = ["trl==0.29.1", "transformers", "peft", "accelerate", "psutil"]


# ----------------------------------------------------------------------------------------------
# Setup (parent process, project venv): model, tokenizer, reward adapter, TRL's reward model, prompts


def save_base(args, work: str):
    """A random-init model (`model_config`: the Llama of `--hidden`, `--layers`, or the Qwen-vocabulary shape; fp32)
    with the builtin tokenizer in work/base; returns the tokenizer and the parameter count (shared with
    rl_vs_trl.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.runtime import tiny

    tokenizer = AutoTokenizer.from_pretrained(tiny.resolve("builtin:tiny-llama"))
    config = model_config(args, tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(os.path.join(work, "base"))
    tokenizer.save_pretrained(os.path.join(work, "base"))
    return tokenizer, n_params


def prepare(args, work: str) -> None:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from alignment.assets import reviews

    tokenizer, n_params = save_base(args, work)
    config = model_config(args, tokenizer)
    # the reward stage's format: a SEQ_CLS LoRA adapter with the score head in modules_to_save
    classifier = AutoModelForSequenceClassification.from_pretrained(os.path.join(work, "base"), num_labels=1)
    reward = get_peft_model(
        classifier,
        LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", task_type=TaskType.SEQ_CLS, modules_to_save=["score"]
        ),
    )
    with torch.no_grad():
        for name, param in reward.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    reward.save_pretrained(os.path.join(work, "reward"))
    tokenizer.save_pretrained(os.path.join(work, "reward"))
    with open(os.path.join(work, "reward", "reward_stats.json"), "w") as f:
        json.dump({"mean": 0.0, "std": 1.0}, f)
    # TRL takes full models: the same reward, merged (also its value model's init, as TRL's examples do)
    reward.merge_and_unload().save_pretrained(os.path.join(work, "reward_merged"))
    with open(os.path.join(work, "prompts.jsonl"), "w") as f:
        for row in reviews.prompts("train"):
            f.write(json.dumps(row) + "\n")
    print(f"model: {config.model_type}, {n_params / 1e6:.1f}M parameters, fp32, {config.num_hidden_layers} layers, "
          f"hidden {config.hidden_size}, vocabulary {config.vocab_size:,}")  # fmt: skip


def model_config(args, tokenizer):
    """The benchmark model's config: the shipped Llama, or a small Qwen2 trunk under Qwen2.5's vocabulary."""
    from transformers import LlamaConfig, Qwen2Config

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, max_position_embeddings=256)  # fmt: skip
    if getattr(args, "shape", "shipped") == "qwen-vocab":
        # Qwen2.5-0.5B's vocabulary, tied embeddings and grouped-query heads of 64; 2 layers of hidden 256
        return Qwen2Config(vocab_size=QWEN_VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, **ids)  # fmt: skip
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                       num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=16, **ids)  # fmt: skip


def ensure_trl_venv() -> str:
    python = os.path.join(TRL_VENV, "bin", "python")
    ok = (
        os.path.isfile(python)
        and subprocess.run(
            [python, "-c", "import trl, sys; sys.exit(trl.__version__ != '0.29.1')"], capture_output=True
        ).returncode
        == 0
    )
    if not ok:
        print(f"installing trl 0.29.1 into {TRL_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", TRL_VENV], check=True)
        # torch first and pinned: unpinned, pip would pull a multi-GB CUDA build (PLATFORM.md)
        subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *TRL_PACKAGES], check=True)
    return python


# ----------------------------------------------------------------------------------------------
# Workers (each in a fresh process; print one JSON line)


def worker_ours(args, work: str, shared: bool = False, checkpointed: bool = False) -> dict:
    sys.path.insert(0, ROOT)
    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig
    from alignment.ppo.train import train
    from alignment.runtime.tracking import read_metrics

    out = os.path.join(work, "ours-shared" if shared else "ours-checkpointed" if checkpointed else "ours")
    cfg = load_config(PPOConfig, None, [
        f"output_dir={out}", f"model.name_or_path={os.path.join(work, 'base')}", "model.dtype=float32",
        f"reward.path={os.path.join(work, 'reward')}", f"data.path={os.path.join(work, 'prompts.jsonl')}",
        "policy.r=16", "policy.alpha=32", "value.adapter.r=16", "value.adapter.alpha=32",
        f"rollout.per_device_batch_size={args.batch}", f"rollout.response_length={args.response_length}",
        "rollout.temperature=0.7", "ppo.epochs=4", "ppo.num_minibatches=1", "ppo.gradient_accumulation_steps=1",
        f"train.total_episodes={args.episodes}", "train.learning_rate=3e-6", "train.sample_steps=0",
        "kl.coef=0.05", f"value.share_with_policy={str(shared).lower()}",
        f"model.gradient_checkpointing={str(args.gradient_checkpointing or checkpointed).lower()}",
    ])  # fmt: skip
    train(cfg)
    rows = read_metrics(out)
    loop = sum(args.batch / r["time/episodes_per_second"] for r in rows)
    return {"episodes": rows[-1]["train/episodes"], "loop_seconds": loop, "peak_rss_mb": peak_rss_mb()}


def worker_trl(args, work: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(work, "base"))
    with open(os.path.join(work, "prompts.jsonl")) as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    policy = AutoModelForCausalLM.from_pretrained(os.path.join(work, "base"), dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(os.path.join(work, "reward_merged"), num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(os.path.join(work, "reward_merged"), num_labels=1)
    config = PPOConfig(
        output_dir=os.path.join(work, "trl"), use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, num_mini_batches=1,
        num_ppo_epochs=4, response_length=args.response_length, temperature=0.7, total_episodes=args.episodes,
        learning_rate=3e-6, kl_coef=0.05, stop_token="eos", missing_eos_penalty=1.0, num_sample_generations=0,
        local_rollout_forward_batch_size=args.batch, seed=42, disable_tqdm=True, logging_steps=1000,
        gradient_checkpointing=args.gradient_checkpointing,
    )  # fmt: skip
    trainer = PPOTrainer(
        args=config, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward,
        train_dataset=dataset, value_model=value,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )  # fmt: skip
    start = time.time()
    trainer.train()
    loop = time.time() - start
    episodes = config.num_total_batches * config.batch_size
    return {"episodes": episodes, "loop_seconds": loop, "peak_rss_mb": peak_rss_mb()}


def run_worker(python: str, side: str, args, work: str) -> dict:
    return harness.run_worker(os.path.abspath(__file__), side, work, args.threads, python=python, stage="ppo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass, on both sides (activations are most of the memory left)",
    )
    parser.add_argument(
        "--shape",
        choices=["shipped", "qwen-vocab"],
        default="shipped",
        help="shipped: the Llama above; qwen-vocab: Qwen2.5's 151,936-way vocabulary on a small trunk",
    )
    parser.add_argument("--skip-shared", action="store_true", help="do not run the shared policy+value variant")
    parser.add_argument(
        "--ours-checkpointed",
        action="store_true",
        help="also run ours with model.gradient_checkpointing=true (policy and value passes recomputed), TRL as is",
    )
    parser.add_argument(
        "--before",
        metavar="TREE",
        help="also run ours from another source tree of this project (e.g. `git archive COMMIT | tar -x -C TREE`), "
        "same settings: a before/after in one run",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run (the same for both)")
    parser.add_argument("--worker", choices=["ours", "ours-shared", "ours-checkpointed", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        if args.worker == "trl":
            result = worker_trl(args, args.work)
        else:
            result = worker_ours(args, args.work, args.worker == "ours-shared", args.worker == "ours-checkpointed")
        print(json.dumps(result))
        return
    report(args, run_all(args))


def run_all(args) -> list[tuple[str, dict]]:
    """(label, result) of every side asked for, each in its own process, one after the other."""
    trl_python = ensure_trl_venv()
    print(harness.machine(args.threads), flush=True)
    with tempfile.TemporaryDirectory(prefix="ppo-vs-trl-") as work:
        prepare(args, work)
        runs = [("rlhf ppo (one base, 3 adapters)", run_worker(sys.executable, "ours", args, work))]
        if args.ours_checkpointed:
            runs.append(("rlhf ppo, checkpointed", run_worker(sys.executable, "ours-checkpointed", args, work)))
        if not args.skip_shared:
            runs.append(("rlhf ppo, policy+value shared", run_worker(sys.executable, "ours-shared", args, work)))
        if args.before:
            tree = os.path.abspath(args.before)
            # the other tree's script knows only the shared options
            argv = [a for a in sys.argv[1:] if a not in ("--before", args.before, "--ours-checkpointed")]
            before = harness.run_worker(os.path.join(tree, "benchmarks", "ppo_vs_trl.py"), "ours", work, args.threads,
                                        argv=argv, cwd=tree, label="before", stage="ppo")  # fmt: skip
            runs.append((f"rlhf ppo, before ({os.path.basename(tree)})", before))
        runs.append(("trl 0.29.1 PPO + peft_config", run_worker(trl_python, "trl", args, work)))
    return runs


def report(args, runs: list[tuple[str, dict]]) -> None:
    """One row per side, then each of ours against TRL: memory and episodes/s ratios."""
    print(
        f"shape {args.shape}, load average {harness.load_average():.1f} at the end, batch {args.batch}, "
        f"response length {args.response_length}, {args.episodes} episodes, 4 PPO epochs, CPU fp32"
        + (", gradient checkpointing on both sides" if args.gradient_checkpointing else "")
    )
    for name, r in runs:
        r["episodes_per_second"] = r["episodes"] / r["loop_seconds"]
        print(f"  {name:<40} {r['episodes']:>4} episodes  {r['episodes_per_second']:6.2f} episodes/s  "
              f"peak RSS {r['peak_rss_mb']:8.0f} MB")  # fmt: skip
    trl = runs[-1][1]
    memory_aim = 0.35 if args.shape == "shipped" else 0.3  # issue 16's acceptance at each shape
    for name, r in runs[:-1]:
        memory, speed = r["peak_rss_mb"] / trl["peak_rss_mb"], r["episodes_per_second"] / trl["episodes_per_second"]
        aims = f"memory <= {memory_aim}x: {'yes' if memory <= memory_aim else 'no'}"
        if args.shape == "shipped":
            aims += f", episodes/s >= 1.5x: {'yes' if speed >= 1.5 else 'no'}"
        print(f"{name} / TRL peft: memory {memory:.2f}x, episodes/s {speed:.2f}x ({aims})")


if __name__ == "__main__":
    main()
