"""`rlhf pipeline method=...`: which stage command and config each method runs, checked before anything runs."""

import os

import pytest

from alignment.common.errors import ConfigError
from alignment.config.loader import load_config
from alignment.dpo.config import DPOConfig
from alignment.pipeline import PipelineConfig, check_stages, policy_stage
from alignment.ppo.config import PPOConfig


def pipeline(tmp_path, *overrides):
    return load_config(PipelineConfig, None, [f"output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("method, algorithm", [("ppo", "ppo"), ("rloo", "rloo"), ("grpo", "grpo")])
def test_online_methods_run_the_ppo_stage_with_their_algorithm(tmp_path, method, algorithm):
    cfg = pipeline(tmp_path, f"method={method}")
    out = os.path.join(tmp_path, method)
    command, args = policy_stage(cfg, out, "/r/sft", "/r/reward", "/r/export")
    assert command == "ppo"
    stage = load_config(PPOConfig, args[0], args[1:])
    assert stage.algorithm == algorithm
    assert (stage.output_dir, stage.model.name_or_path, stage.reward.path) == (out, "/r/sft", "/r/reward")
    check_stages(cfg, str(tmp_path))  # every stage's config loads


def test_dpo_trains_from_the_export_on_the_sft_base(tmp_path):
    cfg = pipeline(tmp_path, "method=dpo")
    command, args = policy_stage(cfg, str(tmp_path / "dpo"), "/r/sft", "/r/reward", "/r/export")
    assert command == "dpo"
    stage = load_config(DPOConfig, args[0], args[1:])
    assert stage.model.name_or_path == "/r/sft"
    assert stage.data.path == stage.data.eval_path == "/r/export/kwise"
    check_stages(cfg, str(tmp_path))


def test_a_bad_dpo_override_names_the_pipeline_stage_before_anything_runs(tmp_path):
    cfg = pipeline(tmp_path, "method=dpo")
    cfg.dpo = ["loss.beta=0"]
    with pytest.raises(ConfigError, match="pipeline stage dpo") as err:
        check_stages(cfg, str(tmp_path))
    assert "\n" not in str(err.value)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "overrides, rounds_with_reward",
    [
        (["method=ppo", "rounds=2"], [1, 2]),  # online methods train against it
        (["method=dpo", "rounds=2"], []),  # nothing reads it
        (["method=dpo", "rounds=3", "acquisition.method=dopt"], [1, 2]),  # it picks rounds 2 and 3's tasks
        (["method=dpo", "rounds=2", "acquisition.method=random"], []),  # random acquisition needs none
        (["method=dpo", "rounds=2", "to_stage=reward"], [1, 2]),  # asked for
    ],
)
def test_a_round_trains_a_reward_model_only_when_something_uses_it(tmp_path, overrides, rounds_with_reward):
    from alignment.pipeline import needs_reward

    cfg = pipeline(tmp_path, *overrides)
    assert [r for r in range(1, cfg.rounds + 1) if needs_reward(cfg, r)] == rounds_with_reward
