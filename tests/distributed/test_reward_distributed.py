"""The reward stage on 2 CPU processes (DDP, ZeRO-2, ZeRO-3) equals one process with the same global batch.

Rank r reads its own slice of each global batch and each prompt weighs the same in the loss, so two
ranks of 4 prompts take the step one process of 8 prompts takes: a wrong shard, a missing gradient
average or a partitioned save shows up as a different model.
"""

import json
import os
import subprocess
import sys

import pytest

from reward.rankings import synthetic
from tests.distributed.launch import assert_same_adapter, launch_stage

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


@pytest.mark.parametrize(
    "kind",
    ["ddp", pytest.param("zero2", marks=pytest.mark.extended), "zero3"],  # ZeRO-2: tests/distributed/test_clipping.py
)
def test_two_processes_equal_one_with_the_same_global_batch(kind, tmp_path, data, single):
    out = tmp_path / "run"
    proc = launch_stage(kind, "reward", f"output_dir={out}", f"data.path={data}",
                        "model.name_or_path=builtin:tiny-llama", "train.per_device_batch_size=4", *COMMON)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert_same_adapter(out, single)
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
