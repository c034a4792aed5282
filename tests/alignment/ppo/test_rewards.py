"""How PPO's scores are normalised: a reward model without spread is never scaled into a strong objective."""

import json

import torch

from alignment.ppo.config import PPORewardConfig
from alignment.ppo.rewards import RewardSource
from reward.model import read_held_out
from reward.train import signal_warnings


class OneProcess:
    """`accelerator.gather` of a single process: the tensor itself."""

    @staticmethod
    def gather(x):
        return x


def source(normalize: str, std: float, min_std: float = 0.1) -> RewardSource:
    stats = {"mean": 1.0, "std": std, "count": 512, "source": "training completions"}
    return RewardSource(PPORewardConfig(min_std=min_std), "adapter", normalize, stats=stats)


def test_stats_divide_by_the_spread_above_the_floor():
    raw = torch.tensor([0.0, 1.0, 3.0])
    got = source("stats", std=2.0).normalized(raw, OneProcess)
    torch.testing.assert_close(got, (raw - 1.0) / 2.0)
    assert source("stats", std=2.0).spread_warning() is None


def test_a_spread_under_the_floor_is_divided_by_the_floor_and_warns():
    raw = torch.tensor([0.99, 1.0, 1.02])
    s = source("stats", std=0.017)
    torch.testing.assert_close(s.normalized(raw, OneProcess), (raw - 1.0) / 0.1)
    line = s.spread_warning()
    assert "0.017" in line and "reward.min_std 0.1" in line and "\n" not in line
    # The floor is the user's to set; at a floor under the spread, the spread is used again.
    torch.testing.assert_close(source("stats", 0.017, min_std=0.01).normalized(raw, OneProcess), (raw - 1.0) / 0.017)


def test_running_moments_are_floored_too():
    s = source("running", std=1.0)
    raw = torch.tensor([0.5, 0.501, 0.502, 0.503])
    got = s.normalized(raw, OneProcess)
    torch.testing.assert_close(got, (raw - raw.double().mean().float()) / 0.1)
    assert source("none", std=0.017).normalized(raw, OneProcess).equal(raw)


def test_the_reward_stage_names_a_model_with_no_preference():
    stats = {"mean": -0.79, "std": 0.017, "count": 512, "source": "training completions"}
    lines = signal_warnings({"accuracy": 0.44, "pairs": 134}, stats)
    assert len(lines) == 2 and "0.440 on 134 pairs" in lines[0] and "0.017" in lines[1]
    assert signal_warnings({"accuracy": 0.82, "pairs": 390}, {**stats, "std": 2.25}) == []
    assert signal_warnings({}, {**stats, "std": 0.5}) == []  # no held-out rankings: nothing to judge by


def test_a_model_at_chance_on_its_held_out_pairs_is_never_scaled_up():
    s = source("stats", std=0.55)
    s.held_out = {"accuracy": 0.47, "pairs": 133}
    raw = torch.tensor([0.0, 1.0, 2.0])
    torch.testing.assert_close(s.normalized(raw, OneProcess), raw - 1.0)  # divided by max(0.55, 1)
    line = s.spread_warning()
    assert "no better than chance (0.470 on 133" in line and "divided by 1" in line
    # Above chance, or without held-out pairs to judge by, its own spread again.
    for held_out in ({"accuracy": 0.6, "pairs": 133}, {"accuracy": float("nan"), "pairs": 0}, None):
        s.held_out = held_out
        torch.testing.assert_close(s.normalized(raw, OneProcess), (raw - 1.0) / 0.55)
        assert s.spread_warning() is None
    # A spread over 1 is divided by itself either way: the floor only stops scaling up.
    s = source("stats", std=2.0)
    s.held_out = {"accuracy": 0.4, "pairs": 50}
    torch.testing.assert_close(s.normalized(raw, OneProcess), (raw - 1.0) / 2.0)


def test_held_out_report_is_read_when_there_is_one(tmp_path):
    assert read_held_out(str(tmp_path)) is None  # trained without held-out rankings
    (tmp_path / "eval.json").write_text("{not json")
    assert read_held_out(str(tmp_path)) is None
    (tmp_path / "eval.json").write_text(json.dumps({"accuracy": 0.44, "pairs": 134}))
    assert read_held_out(str(tmp_path)) == {"accuracy": 0.44, "pairs": 134}
