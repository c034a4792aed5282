"""benchmarks/active_learning_curve.py: the policy points it prints are read back and averaged as reported."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load():
    path = os.path.join(ROOT, "benchmarks", "active_learning_curve.py")
    spec = importlib.util.spec_from_file_location("active_learning_curve", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


curve = _load()


def test_policy_lines_round_trip_and_filter_by_rule_and_episodes():
    point = {"win_rate": 0.71875, "stderr": 0.02154, "gold": 1.234, "kl": 2.5}
    lines = [
        curve.policy_line(0, "random", 30, point, 2048),
        curve.policy_line(0, "delta_ucb:tokens", 120, {**point, "win_rate": 0.8, "kl": None}, 2048),
        curve.policy_line(1, "random", 30, {**point, "win_rate": 0.5}, 4096),  # another PPO length: left out
        curve.policy_line(0, "dopt", 30, point, 2048),  # a rule not asked for: left out
        "  seed 0 random         30 rankings: held-out accuracy 0.6194; noiseless 0.6163",  # an accuracy line
        curve.policy_line(0, "random", 30, {**point, "win_rate": 0.75}, 2048),  # logged again: the last counts
    ]
    found = curve.parse_policy_lines(lines, ["random", "delta_ucb:tokens"], 2048)
    assert found == {0: {"random": {30: (0.75, 0.0215)}, "delta_ucb:tokens": {120: (0.8, 0.0215)}}}
    assert curve.parse_policy_lines(lines, ["random"], 4096) == {1: {"random": {30: (0.5, 0.0215)}}}


def test_accuracy_lines_are_not_read_as_policy_points_nor_policy_lines_as_accuracy():
    line = curve.policy_line(2, "random", 60, {"win_rate": 0.7, "stderr": 0.02, "gold": 1.0, "kl": 2.0}, 2048)
    assert line.startswith("  seed 2 random         60 rankings: policy gold win rate over SFT 0.7000 ± 0.0200")
    assert curve.POLICY_LINE.match(line)
    assert not curve.POLICY_LINE.match("  seed 2 random         60 rankings: held-out accuracy 0.7000")


def test_mean_win_rates_pair_the_seeds_every_rule_measured():
    points = {
        0: {"random": {30: (0.6, 0.02), 60: (0.7, 0.02)}, "a": {30: (0.6, 0.02), 60: (0.8, 0.02)}},
        1: {"random": {30: (0.4, 0.02), 60: (0.9, 0.02)}, "a": {30: (0.4, 0.02)}},  # seed 1 has no 60 for `a`
        2: {"random": {30: (0.5, 0.02)}},  # seed 2 has no point of `a` at all
    }
    mean = curve.mean_win_rates(points, ["random", "a"])
    # 30: seeds 0 and 1 (both rules); 60: seed 0 only, so random's 60 is 0.7, not (0.7 + 0.9) / 2.
    # The spread over the seeds: 0.6 and 0.4 have sample std sqrt(0.02), over sqrt(2) seeds 0.1; one seed: 0.
    rounded = {m: [(n, round(w, 12), k, round(se, 12)) for n, w, k, se in c] for m, c in mean.items()}
    assert rounded == {"random": [(30, 0.5, 2, 0.1), (60, 0.7, 1, 0.0)], "a": [(30, 0.5, 2, 0.1), (60, 0.8, 1, 0.0)]}
    assert curve.mean_win_rates({}, ["random"]) == {"random": []}


def test_combine_runs_averages_ppo_seeds_and_takes_their_spread_as_the_stderr():
    runs = [
        {"win_rate": 0.6, "stderr": 0.02, "gold": 1.0, "kl": 2.0},
        {"win_rate": 0.7, "stderr": 0.02, "gold": 2.0, "kl": None},
        {"win_rate": 0.8, "stderr": 0.02, "gold": 3.0, "kl": 4.0},
    ]
    point = curve.combine_runs(runs)
    assert point["runs"] == [0.6, 0.7, 0.8] and point["kl"] is None  # a run without KL: no mean KL
    assert abs(point["win_rate"] - 0.7) < 1e-12 and abs(point["gold"] - 2.0) < 1e-12
    assert abs(point["stderr"] - 0.1 / 3**0.5) < 1e-12  # sample std 0.1 over sqrt(3)
    one = curve.combine_runs(runs[:1])  # one run: the evaluation's own stderr
    assert one == {"win_rate": 0.6, "stderr": 0.02, "gold": 1.0, "kl": 2.0, "runs": [0.6]}
    line = curve.policy_line(0, "random", 30, point, 2048)
    assert line.endswith("; 3 PPO seeds: 0.6000 0.7000 0.8000)") and curve.POLICY_LINE.match(line)
    # A mean of 3 PPO runs is read only when asked for, never paired with (or over) one run's point.
    single = curve.policy_line(0, "random", 30, one, 2048)
    assert curve.parse_policy_lines([single, line], ["random"], 2048) == {0: {"random": {30: (0.6, 0.02)}}}
    assert curve.parse_policy_lines([single, line], ["random"], 2048, 3) == {0: {"random": {30: (0.7, 0.0577)}}}


def test_differences_pair_each_rule_with_random_on_the_same_seed():
    points = {
        0: {"random": {30: (0.6, 0.02), 60: (0.7, 0.02)}, "a": {30: (0.6, 0.02), 60: (0.8, 0.02)}},
        1: {"random": {60: (0.5, 0.02)}},  # no point of `a`: no difference
    }
    diff = curve.differences(points, "a")
    assert list(diff) == [0] and diff[0]["a"][30] == (0.0, 0.0)
    assert abs(diff[0]["a"][60][0] - 0.1) < 1e-12
