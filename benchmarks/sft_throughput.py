"""SFT throughput: our `rlhf sft` against TRL's SFTTrainer, same model, data and settings, one run.

    python benchmarks/sft_throughput.py            # ~20M-parameter Llama, LoRA r=16, CPU
    python benchmarks/sft_throughput.py --rows 512 --hidden 256

Both train one epoch of the same prompt/completion rows with LoRA on the same base, batch size,
max length, learning rate and completion-only loss, in separate processes. Throughput is the
real (non-pad) tokens of that epoch divided by the training loop's wall time (each framework's
own: our manifest's train_seconds, TRL's train_runtime). Prints both and the ratio; measured figures
live in docs/benchmarks.md (and the README's performance table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import harness  # noqa: E402

TRL_SCRIPT = r"""
import json, sys, time
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
a = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(a["model"])
model = AutoModelForCausalLM.from_pretrained(a["model"])
data = load_dataset("json", data_files=a["data"], split="train")
args = SFTConfig(
    output_dir=a["out"], per_device_train_batch_size=a["batch"], num_train_epochs=1, learning_rate=a["lr"],
    max_length=a["max_length"], completion_only_loss=True, packing=False, lr_scheduler_type="cosine",
    logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
    dataloader_num_workers=0, disable_tqdm=True,
)
peft = LoraConfig(r=a["r"], lora_alpha=2 * a["r"], target_modules="all-linear", task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
out = trainer.train()
print(json.dumps({"train_seconds": out.metrics["train_runtime"], "steps": out.global_step}))
"""


def build_model(folder: str, hidden: int, layers: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.runtime.tiny import build_tokenizer

    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
        num_attention_heads=max(4, hidden // 64), max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def real_tokens(model_dir: str, rows: list[dict], max_length: int) -> int:
    from transformers import AutoTokenizer

    from alignment.runtime.formatting import encode_sft

    tok = AutoTokenizer.from_pretrained(model_dir)
    return sum(len(encode_sft(tok, r, max_length)["input_ids"]) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--r", type=int, default=16)
    args = ap.parse_args()
    print(harness.machine(), "(torch's default threads on both sides)", flush=True)

    from alignment.assets import reviews

    work = tempfile.mkdtemp(prefix="sft-bench-")
    model_dir = os.path.join(work, "model")
    params = build_model(model_dir, args.hidden, args.layers)
    rows = reviews.sft_rows(args.rows, seed=0)
    data = os.path.join(work, "data.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    tokens = real_tokens(model_dir, rows, args.max_length)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"}
    print(f"model: Llama {params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers), LoRA r={args.r}, "
          f"{args.rows} rows, {tokens} real tokens, batch {args.batch}, max_length {args.max_length}, CPU fp32")  # fmt: skip

    ours_out = os.path.join(work, "ours")
    cmd = [
        sys.executable, "-m", "alignment", "sft", f"output_dir={ours_out}", f"model.name_or_path={model_dir}",
        f"data.path={data}", "data.eval_size=0", f"data.max_length={args.max_length}", f"adapter.r={args.r}",
        f"adapter.alpha={2 * args.r}", f"train.per_device_batch_size={args.batch}", "train.epochs=1",
        "train.learning_rate=2e-4", "train.log_steps=1000000", "save_merged=false", "seed=0",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    with open(os.path.join(ours_out, "manifest.json")) as f:
        ours = json.load(f)["train_seconds"]

    trl_args = {"model": model_dir, "data": data, "out": os.path.join(work, "trl"), "batch": args.batch,
                "lr": 2e-4, "max_length": args.max_length, "r": args.r}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", TRL_SCRIPT, json.dumps(trl_args)], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    trl = json.loads(done.stdout.strip().splitlines()[-1])["train_seconds"]

    print(f"{'':<18}{'train s':>10}{'tokens/s':>12}")
    print(f"{'rlhf sft':<18}{ours:>10.1f}{tokens / ours:>12.0f}")
    print(f"{'TRL SFTTrainer':<18}{trl:>10.1f}{tokens / trl:>12.0f}")
    print(f"ratio (ours / TRL tokens/s): {trl / ours:.2f}x")


if __name__ == "__main__":
    main()
