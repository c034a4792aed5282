"""Two CPU processes of a stage under `accelerate launch` with the DeepSpeed JSON configs in launch/, and the
comparison of the adapter they save with a one-process run's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.conftest import REPO, free_port


def launch_stage(kind: str, stage: str, *overrides: str) -> subprocess.CompletedProcess:
    """`accelerate launch` 2 processes of `python -m alignment STAGE OVERRIDES` (kind: ddp, zero2 or zero3)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    if kind == "ddp":
        args, env = (
            ["--config_file", os.path.join(REPO, "launch", "ddp_cpu.yaml")],
            {**env, "ACCELERATE_USE_CPU": "true"},
        )
    else:
        # DeepSpeed on CPU: DS_ACCELERATOR=cpu and no ACCELERATE_USE_CPU (that silently drops DeepSpeed).
        ds_json = os.path.join(REPO, "launch", f"ds_{kind}.json")
        args = ["--use_deepspeed", "--deepspeed_config_file", ds_json, "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
        env = {**env, "DS_ACCELERATOR": "cpu"}
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    # A free port: two launches at once (another pytest session) must not meet on the default 29500.
    cmd = [accelerate, "launch", *args, "--main_process_port", str(free_port()), "-m", "alignment", stage, *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def assert_same_adapter(got_dir, want_dir) -> None:
    """The saved adapters hold the same tensors (saved once, gathered whole: ZeRO-3 partitions live weights)."""
    want = load_file(os.path.join(want_dir, "adapter_model.safetensors"))
    got = load_file(os.path.join(got_dir, "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=1e-4, msg=key)
