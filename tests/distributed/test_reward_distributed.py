"""The reward stage on 2 CPU processes (DDP, ZeRO-2, ZeRO-3) equals one process with the same global batch.

Rank r reads its own slice of each global batch and each prompt weighs the same in the loss, so two
ranks of 4 prompts take the step one process of 8 prompts takes: a wrong shard, a missing gradient
average or a partitioned save shows up as a different model.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from reward.rankings import synthetic

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMON = ["adapter.alpha=64", "train.learning_rate=2e-3", "train.max_steps=6", "train.log_steps=3",
          "data.max_length=64", "data.reference_size=32", "data.test_size=16", "seed=5"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rankings.jsonl"
    with open(path, "w") as f:
        for row in synthetic.rankings(120, k=4, seed=2):
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def single(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, "-m", "alignment", "reward", f"output_dir={out}", f"data.path={data}",
           "model.name_or_path=builtin:tiny-llama", "train.per_device_batch_size=8", *COMMON]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


def launch_args(kind: str, tmp_path) -> tuple[list[str], dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    if kind == "ddp":
        return ["--config_file", os.path.join(ROOT, "launch", "ddp_cpu.yaml")], {**env, "ACCELERATE_USE_CPU": "true"}
    # DeepSpeed on CPU: DS_ACCELERATOR=cpu and no ACCELERATE_USE_CPU (that silently drops DeepSpeed).
    stage = {"zero2": 2, "zero3": 3}[kind]
    ds_json = os.path.join(ROOT, "launch", f"ds_zero{stage}.json")
    if not os.path.isfile(ds_json):
        ds_json = str(tmp_path / f"ds_zero{stage}.json")
        with open(ds_json, "w") as f:
            json.dump({"zero_optimization": {"stage": stage}, "gradient_clipping": "auto",
                       "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
                       "gradient_accumulation_steps": "auto"}, f)  # fmt: skip
    return ["--use_deepspeed", "--deepspeed_config_file", ds_json, "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"], {**env, "DS_ACCELERATOR": "cpu"}  # fmt: skip


@pytest.mark.parametrize("kind", ["ddp", "zero2", "zero3"])
def test_two_processes_equal_one_with_the_same_global_batch(kind, tmp_path, data, single):
    out = tmp_path / "run"
    args, env = launch_args(kind, tmp_path)
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    cmd = [accelerate, "launch", *args, "-m", "alignment", "reward", f"output_dir={out}", f"data.path={data}",
           "model.name_or_path=builtin:tiny-llama", "train.per_device_batch_size=4", *COMMON]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    # Saved once, gathered whole (ZeRO-3 partitions live weights across the ranks).
    want = load_file(os.path.join(single, "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for key in want:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=1e-4, msg=key)
    # Evaluation covers every held-out prompt exactly once across the two ranks.
    report = json.loads((out / "eval.json").read_text())
    reference = json.loads(open(os.path.join(single, "eval.json")).read())
    assert report["pairs"] == reference["pairs"] and report["prompts"] == reference["prompts"] >= 16
    assert report["accuracy"] == pytest.approx(reference["accuracy"], abs=1.5 / report["pairs"])
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["count"] == 32
    assert stats["mean"] == pytest.approx(
        json.loads(open(os.path.join(single, "reward_stats.json")).read())["mean"], abs=1e-3
    )
