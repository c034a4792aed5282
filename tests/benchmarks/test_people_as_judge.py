"""Issue 25's acceptance, through the benchmark scripts: the campaign intervals are calibrated (a small version in
the fast suite, 20 campaigns through the real store when slow), the reliability estimate puts a careless annotator
last, and weighing rankings by it recovers the reward model's accuracy."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


calibration = _load("campaign_calibration")
reliability = _load("annotator_reliability")


def test_true_win_rates_are_the_mean_of_the_noise_model():
    gold = calibration.np.array([[0.0, 1.0], [2.0, 0.0]])
    sig = lambda d, t: 1 / (1 + calibration.np.exp(-d / t))  # noqa: E731
    want = sum((sig(-1.0, t) + sig(2.0, t)) / 2 for t in calibration.TEMPERATURES) / 3
    assert calibration.true_win_rates(gold, calibration.TEMPERATURES)[0, 1] == pytest.approx(want)


def test_small_calibration_without_the_store():
    out = calibration.run(campaigns=20, prompts=30, mode="pure", samples=200, seed=1)
    assert out["intervals"] == 20 * 6 and out["coverage"] >= 0.85, out


@pytest.mark.slow
def test_calibration_over_20_campaigns_through_the_store():
    out = calibration.run(campaigns=20, prompts=40, mode="store", samples=300, seed=0)
    assert out["intervals"] == 20 * 6 and out["coverage"] >= 0.9, out


@pytest.mark.slow
def test_the_careless_annotator_comes_last_and_weights_recover_the_reward_model(capsys):
    found = reliability.part_a(seeds=10, n_tasks=150)
    assert all(last >= 9 for last in found.values()), found
    args = argparse.Namespace(epochs=3, train_seed=42, threads=1, held_out=200, jobs=2)
    acc = reliability.part_b([0], 150, args)
    estimated, equal, without = acc["estimated"][0], acc["equal"][0], acc["without"][0]
    assert estimated > equal and estimated >= without - 0.01, acc
