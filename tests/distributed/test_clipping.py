"""`train.max_grad_norm` under DeepSpeed ZeRO-2 on two CPU processes, in SFT and reward: a small norm clips,
0 does not clip (DeepSpeed clips inside its own step and would otherwise clip at 1.0 whatever the config says).

One optimizer step per run, with `adam_eps` far above every gradient entry: AdamW's first step is then
linear in the gradient, lr * g / (|g| + eps) ~ lr * g / eps per entry. Two runs from the same init that
differ only in clipping move apart by exactly the part the clipping removed: an unclipped run takes
lr * ||g|| / eps, one clipped to c takes lr * c / eps, so ||w_0 - w_c|| = lr * (||g|| - c) / eps, with
||g|| the gradient norm both runs log (before clipping). The settings make ||g|| > 1 (a large LoRA alpha; in
the reward stage, reward centring), where DeepSpeed's old default of 1.0 would have clipped too.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from reward.rankings import synthetic
from tests.conftest import accelerate_launch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LR, EPS, SMALL = 100.0, 1e5, 0.01  # a first step of lr / eps = 1e-3 times the gradient
COMMON = [f"train.learning_rate={LR}", f"train.adam_eps={EPS}", "train.max_steps=1", "train.log_steps=1",
          "train.lr_scheduler=constant", "train.warmup_ratio=0", "train.per_device_batch_size=2", "adapter.r=4",
          "adapter.alpha=256"]  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1"}


def run(tmp_path, stage: str, max_grad_norm: float, *args: str) -> tuple[dict, float]:
    out = tmp_path / f"{stage}-{max_grad_norm}"
    r = accelerate_launch(
        "zero2", stage, f"configs/{stage}.yaml", f"output_dir={out}", f"train.max_grad_norm={max_grad_norm}",
        *COMMON, *args, env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    # training never uses DeepSpeed's shared-memory inference kernel: not compiled, not loaded (runtime/accelerator.py)
    assert "shm_comm" not in r.stdout + r.stderr
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    (row,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]
    return load_file(out / "adapter_model.safetensors"), row["train/grad_norm"]


@pytest.fixture(scope="module")
def rankings(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rankings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic.rankings(8, k=3, seed=4)))
    return str(path)


@pytest.mark.parametrize("stage", [pytest.param("sft", marks=pytest.mark.extended), "reward"])  # one clips in CI
def test_zero2_clips_at_max_grad_norm_and_not_at_all_with_0(tmp_path, stage, rankings):
    extra = (
        ["data.limit=8", "data.eval_size=0", "data.max_length=32", "save_merged=false"]
        if stage == "sft"
        # centring the rewards (TRL's center_rewards_coefficient) gives the first step a gradient well above 1
        else [
            f"data.path={rankings}",
            "data.eval_path=null",
            "model.name_or_path=builtin:tiny-llama",
            "data.test_size=0",
            "data.max_length=32",
            "data.reference_size=2",
            "loss.center_coef=1",
        ]  # fmt: skip
    )
    unclipped, norm = run(tmp_path, stage, 0, *extra)
    clipped, norm_again = run(tmp_path, stage, SMALL, *extra)
    assert norm == pytest.approx(norm_again, rel=1e-5)  # the same first gradient, measured before clipping
    assert norm > 2  # DeepSpeed's default clipping at 1.0 would have shrunk it
    moved_apart = torch.sqrt(sum(((unclipped[k] - clipped[k]).double() ** 2).sum() for k in unclipped)).item()
    assert moved_apart == pytest.approx(LR * (norm - SMALL) / EPS, rel=2e-3)
