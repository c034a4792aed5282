"""`rlhf dpo data.annotator_weights=estimated` through the stage: constant weights change nothing (they are scaled
to mean 1), and weights that silence some rankings change the adapter; the reward stage likewise."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from alignment.config.loader import load_config
from reward.rankings import synthetic
from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow

COMMON = [
    "model.name_or_path=builtin:tiny-llama",
    "train.learning_rate=5e-3",
    "train.per_device_batch_size=8",
    "data.max_length=48",
    "data.test_size=0",
    "train.max_steps=3",
    "seed=3",
]


def weighted(tmp_path, name: str, weights) -> str:
    rows = synthetic.rankings(16, k=4, seed=1)
    return write_jsonl(tmp_path / f"{name}.jsonl", [{**r, "annotator_weight": w} for r, w in zip(rows, weights)])


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_constant_weights_change_nothing_and_zero_weights_do(tmp_path, stage):
    if stage == "dpo":
        from alignment.dpo.config import DPOConfig as Config
        from alignment.dpo.train import train
    else:
        from reward.train import RewardConfig as Config
        from reward.train import train

    extra = (
        ["uncertainty.enabled=false", "data.reference_size=8"] if stage == "reward" else ["data.max_prompt_length=16"]
    )
    runs = {
        "equal": (weighted(tmp_path, "half", [0.5] * 16), "equal"),
        "constant": (weighted(tmp_path, "half", [0.5] * 16), "estimated"),
        "silenced": (weighted(tmp_path, "silenced", [0.0, 2.0] * 8), "estimated"),
    }
    adapters = {}
    for name, (data, mode) in runs.items():
        out = tmp_path / name
        overrides = [f"output_dir={out}", f"data.path={data}", f"data.annotator_weights={mode}", *COMMON, *extra]
        train(load_config(Config, overrides=overrides))
        adapters[name] = load_file(str(out / "adapter_model.safetensors"))
    for key in adapters["equal"]:
        torch.testing.assert_close(adapters["constant"][key], adapters["equal"][key], msg=key)
    assert any(not torch.equal(adapters["silenced"][k], adapters["equal"][k]) for k in adapters["equal"])
