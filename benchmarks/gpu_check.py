"""The GPU check (run by `benchmarks/gpu_check.sh`): SFT, sampling and PPO on a Qwen2.5-0.5B-shaped model.

    bash benchmarks/gpu_check.sh             # on a machine with a CUDA GPU: the real shapes, bf16, < 10 minutes
    bash benchmarks/gpu_check.sh --dry-run   # CPU, a tiny model under the same code path, seconds

The model is built from a config (Qwen2.5-0.5B's: hidden 896, 24 layers, 14 query / 2 KV heads, 151,936-token
vocabulary, tied embeddings) with random weights, saved in bf16 and loaded back through `from_pretrained`: nothing
is downloaded. Token ids come from the builtin tokenizer. Each part runs the project's own code:
1. SFT: `alignment.sft.train` (LoRA r=16 on every linear layer), packed rows; prints tokens/s and MFU
   (6 x parameters x tokens/s over the GPU's dense bf16 peak: the usual convention, which counts the frozen
   weights' gradients a LoRA run does not compute, so it overstates the work a little);
2. sampling: `alignment.runtime.generation.generate` (KV cache) on a batch of prompts; prints decode tokens/s
   and memory-bandwidth utilisation (each decode step reads every weight and the KV cache so far);
3. PPO: `alignment.ppo.train.train` on the one base with policy, value and reward adapters; prints the peak
   memory (`memory/peak_gb`, allocated) and episodes/s.
Prints one line per figure and a JSON summary as its last line.
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

# Dense bf16 peak (TFLOP/s) and memory bandwidth (TB/s) by device name; unknown GPUs print no utilisation.
PEAKS = {"H200": (989.0, 4.8), "H100": (989.0, 3.35), "A100": (312.0, 2.0), "L40S": (362.0, 0.864)}

QWEN_0_5B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=32768, rope_theta=1_000_000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=True)  # fmt: skip
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1024, max_position_embeddings=1024, tie_word_embeddings=True)  # fmt: skip

# (real, dry run) sizes of each part
SIZES = {
    "sft_rows": (4096, 16), "sft_batch": (16, 4), "sft_length": (1024, 64),
    "sample_batch": (128, 4), "sample_tokens": (256, 8),
    "ppo_batch": (64, 4), "ppo_response": (128, 8), "ppo_episodes": (256, 4),
}  # fmt: skip


def size(name: str, dry: bool) -> int:
    return SIZES[name][1 if dry else 0]


def build_model(work: str, dry: bool) -> tuple[str, int]:
    """Save the random Qwen2.5-0.5B-shaped model (bf16; tiny in a dry run) with the builtin tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from alignment.runtime import tiny

    tokenizer = AutoTokenizer.from_pretrained(tiny.resolve("builtin:tiny-llama"))
    special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = Qwen2Config(**(TINY if dry else QWEN_0_5B), **special)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    path = os.path.join(work, "base")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, n_params


def write_data(work: str, dry: bool) -> tuple[str, str]:
    from alignment.assets import reviews

    sft, prompts = os.path.join(work, "sft.jsonl"), os.path.join(work, "prompts.jsonl")
    with open(sft, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in reviews.sft_rows(size("sft_rows", dry)))
    with open(prompts, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in reviews.prompts("train"))
    return sft, prompts


def run_sft(base: str, data: str, work: str, dry: bool, dtype: str) -> dict:
    from alignment.config.loader import load_config
    from alignment.runtime.tracking import read_metrics
    from alignment.sft import SFTConfig, train

    out = os.path.join(work, "sft")
    cfg = load_config(SFTConfig, None, [
        f"output_dir={out}", f"model.name_or_path={base}", f"model.dtype={dtype}", f"data.path={data}",
        f"data.max_length={size('sft_length', dry)}", "data.packing=true",
        f"train.per_device_batch_size={size('sft_batch', dry)}", "train.epochs=1", "train.log_steps=1",
        "save_merged=false", "checkpoint.save_steps=0",
    ])  # fmt: skip
    started = time.time()
    train(cfg)
    rows = [r for r in read_metrics(out) if "train/tokens_per_second" in r]
    # the first logged window includes warm-up (kernel selection, allocator growth): drop it when there are more
    steady = rows[1:] or rows
    return {"tokens_per_second": sum(r["train/tokens_per_second"] for r in steady) / len(steady),
            "seconds": time.time() - started}  # fmt: skip


def run_sampling(base: str, prompts: str, dry: bool, device) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.runtime.generation import generate, generation_config, left_pad

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).to(device).eval()
    with open(prompts) as f:
        texts = [json.loads(line)["prompt"] for line in f]
    B, T = size("sample_batch", dry), size("sample_tokens", dry)
    ids = [tokenizer(texts[i % len(texts)])["input_ids"] for i in range(B)]
    queries, mask = left_pad(ids, tokenizer.pad_token_id)
    config = generation_config(T, 1.0, tokenizer.pad_token_id, None)  # no EOS: every row decodes T tokens
    generate(
        model, queries[:2].to(device), mask[:2].to(device), generation_config(2, 1.0, tokenizer.pad_token_id, None)
    )
    sync(device)
    started = time.time()
    generate(model, queries.to(device), mask.to(device), config)
    sync(device)
    seconds = time.time() - started
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    c = model.config
    kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 2
    P = queries.shape[1]
    # each of the T steps reads the weights once and the cache of every row so far (mean length P + T / 2)
    bytes_read = T * (weights + B * (P + T / 2) * kv_per_token)
    return {"tokens_per_second": B * T / seconds, "bytes_per_second": bytes_read / seconds, "batch": B, "tokens": T}


def make_reward_adapter(base: str, work: str) -> str:
    """A reward-stage-shaped adapter (SEQ_CLS LoRA + score head) on the base, random and non-zero."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.bfloat16)
    reward = get_peft_model(classifier, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                   task_type=TaskType.SEQ_CLS, modules_to_save=["score"]))  # fmt: skip
    with torch.no_grad():
        for name, param in reward.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    path = os.path.join(work, "reward")
    reward.save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    with open(os.path.join(path, "reward_stats.json"), "w") as f:
        json.dump({"mean": 0.0, "std": 1.0}, f)
    return path


def run_ppo(base: str, prompts: str, work: str, dry: bool, dtype: str) -> dict:
    from alignment.config.loader import load_config
    from alignment.ppo.config import PPOConfig
    from alignment.ppo.train import train
    from alignment.runtime.tracking import read_metrics

    out, B = os.path.join(work, "ppo"), size("ppo_batch", dry)
    cfg = load_config(PPOConfig, None, [
        f"output_dir={out}", f"model.name_or_path={base}", f"model.dtype={dtype}",
        f"reward.path={make_reward_adapter(base, work)}", f"data.path={prompts}",
        f"rollout.per_device_batch_size={B}", f"rollout.response_length={size('ppo_response', dry)}",
        "ppo.epochs=4", "ppo.num_minibatches=1", f"ppo.gradient_accumulation_steps={1 if dry else 2}",
        f"train.total_episodes={size('ppo_episodes', dry)}", "train.sample_steps=0", "checkpoint.save_steps=0",
    ])  # fmt: skip
    train(cfg)
    rows = read_metrics(out)
    steady = rows[1:] or rows  # the first update warms up
    return {"episodes_per_second": B * len(steady) / sum(B / r["time/episodes_per_second"] for r in steady),
            "peak_gb": max(r["memory/peak_gb"] for r in rows)}  # fmt: skip


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, a tiny model, seconds: checks the script path")
    parser.add_argument("--parts", default="sft,sample,ppo", help="comma-separated: sft, sample, ppo")
    args = parser.parse_args()

    import torch

    dry, parts = args.dry_run, set(args.parts.split(","))
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; nothing to measure (--dry-run runs the CPU smoke check)")
        return 0
    print(harness.machine(torch.get_num_threads()), flush=True)
    device = torch.device("cpu" if dry else "cuda")
    name = "cpu (dry run)" if dry else torch.cuda.get_device_name(device)
    peak_flops, peak_bw = next((v for k, v in PEAKS.items() if k in name), (None, None))
    dtype = "float32" if dry else "bfloat16"  # bf16 weights on disk either way; CPU trains them in fp32
    os.environ.setdefault("WANDB_MODE", "disabled")
    summary: dict = {"device": name, "dry_run": dry}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        base, n_params = build_model(work, dry)
        sft_data, prompts = write_data(work, dry)
        summary["parameters"] = n_params
        print(f"gpu_check: {name}; Qwen2.5-0.5B-shaped random model, {n_params / 1e6:.1f}M parameters", flush=True)
        if "sft" in parts:
            sft = run_sft(base, sft_data, work, dry, dtype)
            mfu = 6 * n_params * sft["tokens_per_second"] / (peak_flops * 1e12) if peak_flops else None
            summary["sft"] = {**sft, "mfu": mfu}
            print(f"SFT: {sft['tokens_per_second']:,.0f} tokens/s, MFU {fmt_share(mfu)}", flush=True)
        if "sample" in parts:
            s = run_sampling(base, prompts, dry, device)
            bw = s["bytes_per_second"] / (peak_bw * 1e12) if peak_bw else None
            summary["sample"] = {**s, "bandwidth_utilisation": bw}
            print(f"sampling: {s['tokens_per_second']:,.0f} decode tokens/s (batch {s['batch']}, {s['tokens']} "
                  f"tokens), {s['bytes_per_second'] / 1e9:,.0f} GB/s, bandwidth {fmt_share(bw)}", flush=True)  # fmt: skip
        if "ppo" in parts:
            ppo = run_ppo(base, prompts, work, dry, dtype)
            summary["ppo"] = ppo
            print(f"PPO: {ppo['episodes_per_second']:.2f} episodes/s, peak memory {ppo['peak_gb']:.2f} GB", flush=True)
    print(json.dumps(summary))
    return 0


def fmt_share(x: float | None) -> str:
    return "n/a (unknown peak)" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
