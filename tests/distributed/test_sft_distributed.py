"""SFT on two CPU processes under `accelerate launch`: DDP, DeepSpeed ZeRO-2 and ZeRO-3."""

import json

import pytest
import torch

from tests.conftest import accelerate_launch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def single_process_schedule(lr: float, steps: int, warmup: int, at: list[int]) -> dict:
    """The learning rate after each of `at` optimizer steps, as one process steps the cosine schedule."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    out = {}
    for step in range(1, steps + 1):
        optimizer.step()
        scheduler.step()
        if step in at:
            out[step] = scheduler.get_last_lr()[0]
    return out


@pytest.mark.parametrize(
    "mode",
    ["ddp", pytest.param("zero2", marks=pytest.mark.extended), "zero3"],  # ZeRO-2: tests/distributed/test_clipping.py
)
def test_two_process_sft(tmp_path, mode, builtin_model):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / mode
    r = accelerate_launch(
        mode, "sft", "configs/sft.yaml", f"output_dir={out}", "data.limit=320", "data.eval_size=32",
        "train.per_device_batch_size=8", "train.max_steps=8", "train.log_steps=2", "checkpoint.save_steps=4",
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    # Each rank reads its own shard: equal halves of the first epoch, no example on both ranks.
    assert manifest["data"]["first_epoch_seen_per_rank"] == [8 * 8, 8 * 8]
    assert manifest["data"]["first_epoch_overlap"] == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["train/loss"] for x in lines if "train/loss" in x]
    assert len(losses) == 4 and losses[-1] < losses[0]  # logged once (main process only), and falling
    # One scheduler step per optimizer step on every rank: the cosine schedule ends at 0 at step 8,
    # and at step 4 it is halfway (a schedule stepped once per process would already be at 0).
    lrs = {x["step"]: x["train/learning_rate"] for x in lines if "train/learning_rate" in x}
    assert lrs == pytest.approx(single_process_schedule(lr=3e-3, steps=8, warmup=1, at=sorted(lrs)))
    assert (out / "checkpoints" / "step-4" / "trainer_state.json").is_file()
    # The adapter was gathered from the shards (ZeRO-3) and is a trained one: loads and changes outputs.
    lora_b = [t for k, t in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and all(t.numel() > 0 for t in lora_b) and any(t.abs().sum() > 0 for t in lora_b)
    base = AutoModelForCausalLM.from_pretrained(builtin_model).eval()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(builtin_model), out).eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, policy(ids).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(base(ids).logits, policy(ids).logits, atol=1e-4)
