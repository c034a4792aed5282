"""The DPO stage on 2 CPU processes (DDP, ZeRO-2, ZeRO-3) equals one process with the same global batch.

Rank r reads its own slice of each global batch and the loss is a mean over the informative prompts of the
whole step (all ranks), so two ranks of 4 prompts take the step one process of 8 prompts takes, even when
fully tied rankings (no preference) fall unevenly on the ranks. The reference is the base with the adapter
off, under ZeRO-3 too (partitioned weights gathered for it), or reference log-probs precomputed across ranks.
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
COMMON = ["model.name_or_path=builtin:tiny-llama", "adapter.alpha=64", "train.learning_rate=5e-3", "train.max_steps=4", "train.log_steps=2",
          "data.max_length=48", "data.max_prompt_length=16", "data.test_size=6", "loss.type=plackett_luce", "seed=5"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = synthetic.rankings(40, k=4, seed=2)
    for row in rows[::7]:
        row["ranks"] = [1, 1, 1, 1]  # no preference: weighs nothing, wherever it lands
    path = tmp_path_factory.mktemp("data") / "rankings.jsonl"
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


@pytest.fixture(scope="module")
def single(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, "-m", "alignment", "dpo", f"output_dir={out}", f"data.path={data}",
           "train.per_device_batch_size=8", *COMMON]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


# ZeRO-3 with the adapter-off reference (sharded weights gathered for it); DDP and ZeRO-2 with precomputed ones.
@pytest.mark.parametrize(
    "kind, precompute",
    [
        ("ddp", False),
        ("zero2", True),
        ("zero3", False),
    ],
)
def test_two_processes_equal_one_with_the_same_global_batch(kind, precompute, tmp_path, data, single):
    out = tmp_path / "run"
    proc = launch_stage(kind, "dpo", f"output_dir={out}", f"data.path={data}", "train.per_device_batch_size=4",
                        f"loss.precompute_ref={str(precompute).lower()}", *COMMON)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert_same_adapter(out, single)
    # The logged step metrics are over the whole global batch; evaluation covers every held-out prompt once.
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    reference = [json.loads(line) for line in open(os.path.join(single, "metrics.jsonl"))]
    for got_row, want_row in zip(rows, reference):
        for name in ("train/loss", "rewards/accuracies", "rewards/margins", "eval/loss", "eval/prompts"):
            if name in want_row:
                assert got_row[name] == pytest.approx(want_row[name], rel=1e-3, abs=1e-4), name
