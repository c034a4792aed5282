#!/usr/bin/env bash
# The GPU check: SFT, sampling and PPO on a Qwen2.5-0.5B-shaped random model in bf16 (no download), printing
# SFT MFU, decode tokens/s and memory-bandwidth utilisation of sampling, PPO peak memory and episodes/s.
#
#   bash benchmarks/gpu_check.sh             # on a CUDA machine: within 10 minutes (killed at 10)
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: a tiny model on CPU through the same code, seconds
#
# Without a GPU (and without --dry-run) it says so and exits 0. PYTHON overrides the interpreter
# (default: the worktree's .venv, else python3). The details are in benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export TOKENIZERS_PARALLELISM=false WANDB_MODE="${WANDB_MODE:-disabled}"
if [[ " $* " != *" --dry-run "* ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible; nothing to measure (bash benchmarks/gpu_check.sh --dry-run runs the CPU smoke check)"
  exit 0
fi
exec timeout --signal=INT --kill-after=20 600 "$PYTHON" benchmarks/gpu_check.py "$@"
