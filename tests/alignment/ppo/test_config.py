"""`rlhf ppo`'s config: the algorithm settings are checked when the config loads, one line naming the key, and the
learning rate follows beta by the documented rule."""

import pytest

from alignment.common.errors import ConfigError
from alignment.config.loader import load_config
from alignment.ppo.config import PPOConfig
from alignment.ppo.train import learning_rate

REQUIRED = [
    "output_dir=out",
    "model.name_or_path=m",
    "reward.function=alignment.assets.gold:gold",
    "data.path=prompts.jsonl",
]


def load(*overrides):
    return load_config(PPOConfig, overrides=[*REQUIRED, *overrides])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["algorithm=rloo"], "rollout.samples_per_prompt"),  # k = 1 has no leave-one-out baseline
        (["algorithm=grpo", "rollout.samples_per_prompt=1"], "rollout.samples_per_prompt"),
        (["algorithm=grpo", "rollout.samples_per_prompt=3"], "rollout.per_device_batch_size"),  # 8 % 3
        (["rollout.samples_per_prompt=0"], "rollout.samples_per_prompt"),
        (["kl.mode=loss"], "kl.mode"),  # PPO's KL lives in the per-token reward
        (["algorithm=rloo", "rollout.samples_per_prompt=4", "value.init_from_reward=true"], "value.init_from_reward"),
        (["algorithm=reinforce"], "algorithm"),
        (["algorithm=grpo", "rollout.samples_per_prompt=4", "grpo.scale=prompt"], "grpo.scale"),
        (["loss.aggregation=seq"], "loss.aggregation"),
        (["train.lr_from_beta=0"], "train.lr_from_beta"),
        (["kl.coef=-0.1"], "kl.coef"),
    ],
)
def test_bad_algorithm_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load(*overrides)
    assert "\n" not in str(err.value)


def test_group_settings_load():
    cfg = load("algorithm=grpo", "rollout.samples_per_prompt=4", "kl.mode=loss", "grpo.scale=none",
               "loss.aggregation=token_mean")  # fmt: skip
    assert (cfg.algorithm, cfg.rollout.samples_per_prompt, cfg.kl.mode) == ("grpo", 4, "loss")
    assert load().algorithm == "ppo" and load().rollout.samples_per_prompt == 1


@pytest.mark.parametrize(
    "beta, pivot, expected",
    [(0.1, 0.5, 1e-3), (0.5, 0.5, 1e-3), (1.0, 0.5, 5e-4), (2.0, 0.5, 2.5e-4), (2.0, None, 1e-3)],
)
def test_learning_rate_follows_beta_above_the_pivot(beta, pivot, expected):
    cfg = load(
        "train.learning_rate=1e-3", f"kl.coef={beta}", f"train.lr_from_beta={'null' if pivot is None else pivot}"
    )
    assert learning_rate(cfg) == pytest.approx(expected, rel=1e-12)
