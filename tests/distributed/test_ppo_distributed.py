"""PPO on two CPU processes under `accelerate launch`: DDP, DeepSpeed ZeRO-2 and ZeRO-3 (weights gathered once
per rollout for generation, adapters switched on a partitioned base)."""

import json

import pytest
import torch

from tests.conftest import accelerate_launch, run_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, builtin_model):
    """A short reward run on the builtin base, so PPO carries it as an adapter on the same base."""
    out = tmp_path_factory.mktemp("reward")
    r = run_cli("reward", "configs/reward.yaml", f"output_dir={out}", "train.max_steps=6", "data.reference_size=16",
                "train.log_steps=3", "model.name_or_path=builtin:tiny-llama", "data.path=builtin:reviews-rankings",
                "data.eval_path=null", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return str(out)


@pytest.mark.parametrize("mode", ["ddp", "zero2", "zero3"])
def test_two_process_ppo(tmp_path, mode, reward_dir, builtin_model):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / mode
    r = accelerate_launch(
        mode, "ppo", "configs/ppo.yaml", f"output_dir={out}", "model.name_or_path=builtin:tiny-llama",
        f"reward.path={reward_dir}", "rollout.per_device_batch_size=4", "rollout.response_length=8",
        "ppo.epochs=2", "ppo.num_minibatches=2", "train.total_episodes=24", "train.learning_rate=5e-3",
        "train.sample_steps=2", "checkpoint.save_steps=2", "ppo.target_kl=1e-12", env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["reward_kind"] == "adapter"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # the target_kl stop is decided on both processes alike (a process stepping alone would hang the other)
    assert [x["policy/steps_skipped"] for x in rows] == [2.0, 2.0, 2.0]
    assert [x["step"] for x in rows] == [1, 2, 3]  # logged once, by the main process
    assert [x["train/episodes"] for x in rows] == [8, 16, 24]  # 4 prompts on each of 2 processes per update
    for x in rows:
        assert x["val/ratio_first_minibatch"] == 1.0 and x["policy/approxkl_first_minibatch"] == 0.0
    assert rows[0]["objective/kl"] == 0.0 and rows[-1]["objective/kl"] != 0.0
    assert (out / "checkpoints" / "step-2" / "trainer_state.json").is_file()
    # The policy adapter was gathered from the shards (ZeRO-3) and is a trained one.
    lora_b = [t for k, t in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and all(t.numel() > 0 for t in lora_b) and any(t.abs().sum() > 0 for t in lora_b)
    base = AutoModelForCausalLM.from_pretrained(builtin_model).eval()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(builtin_model), out).eval()
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, policy(ids).logits, atol=1e-5)


# GRPO on PPO's launch paths, under all three: groups of k samples gathered across ranks.
@pytest.mark.parametrize(
    "mode",
    # ZeRO-2 and DDP as PPO's, above: CI samples ZeRO-3, where the group gather meets partitioned weights
    [pytest.param("ddp", marks=pytest.mark.extended), pytest.param("zero2", marks=pytest.mark.extended), "zero3"],
)
def test_two_process_grpo(tmp_path, mode, reward_dir, builtin_model):
    """GRPO on two processes: the batch std is taken over both processes' scores, the token mean over both
    processes' tokens (collectives every rank must reach), and the base carries no value adapter."""
    from safetensors.torch import load_file

    out = tmp_path / mode
    r = accelerate_launch(
        mode, "ppo", "configs/grpo.yaml", f"output_dir={out}", "model.name_or_path=builtin:tiny-llama",
        f"reward.path={reward_dir}", "rollout.per_device_batch_size=4", "rollout.samples_per_prompt=2",
        "rollout.response_length=8", "rollout.temperature=1.5", "grpo.scale=batch", "loss.aggregation=token_mean",
        "ppo.epochs=2", "ppo.num_minibatches=2", "train.total_episodes=16", "train.learning_rate=5e-3",
        "train.sample_steps=0", "checkpoint.save_steps=1", env=ENV,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["algorithm"] == "grpo"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2] and [x["train/episodes"] for x in rows] == [8, 16]
    for x in rows:
        assert x["val/ratio_first_minibatch"] == 1.0 and "loss/value" not in x and "reward_std" in x
    assert rows[0]["objective/kl"] == 0.0 and rows[-1]["objective/kl"] != 0.0
    assert (out / "checkpoints" / "step-1" / "trainer_state.json").is_file()
    tensors = load_file(out / "adapter_model.safetensors")
    assert not any("value" in k for k in tensors)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)
