"""`rlhf demo` exactly as the README runs it (every default), asserting what its report claims: every method beats SFT
by the hidden gold preference AND its samples stay healthy beside SFT's. Time is for benchmarks, not for this test.

The run is deterministic for its seed on one CPU type and thread count (annotators' noise is a function of the task,
not of which thread ranks it), but the bounds below are the acceptance bars of the family of worlds
(benchmarks/worlds.py), not figures of one machine: they hold across seeds and CPUs with margin.
"""

import json

import pytest

from alignment.runtime.health import HealthConfig

pytestmark = pytest.mark.slow

MIN_WIN_RATE = 0.70
"""Every method's gold win rate over SFT (the README's and the worlds benchmark's bar for the family mean)."""
EOS_POINTS, BROKEN_POINTS = 0.05, 0.01
"""Healthy: the EOS rate within 5 points of SFT's, the broken-character rate at most 1 point above SFT's."""


def test_demo_aligns_the_tiny_model_and_reports_it(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    s = json.loads((out / "demo.json").read_text())

    # PPO beats SFT by the hidden gold preference, at a bounded KL.
    assert s["gold_win_rate"] >= MIN_WIN_RATE, s
    assert s["gold_ppo"] - s["gold_sft"] >= 0.8, s
    assert s["samples"] >= 300  # enough held-out completions for the win rate's stderr to be small
    assert s["gold_win_rate_stderr"] < 0.03, s
    # The reward model learned the annotators' preference close to what their noise allows.
    assert 0.68 <= s["reward_accuracy"] <= s["accuracy_ceiling"] + 0.05, s
    assert 0.7 < s["accuracy_ceiling"] < 0.9, s

    # The report and its plots, with the printed summary on the terminal.
    report = (out / "report.md").read_text()
    for png in ("gold_reward.png", "overoptimization.png", "training.png"):
        assert (out / png).stat().st_size > 10_000, png
        assert f"]({png})" in report, png
    assert f"{s['gold_win_rate']:.1%}" in report
    assert "gold win rate PPO over SFT" in proc.stdout and f"{s['gold_win_rate']:.0%}" in proc.stdout
    assert "best achievable under noise" in proc.stdout
    assert "## Health of the samples" in report

    # Every method trained from the same SFT model, rankings and reward model, compared in one evaluation.
    methods = s["methods"]
    assert list(methods) == ["bon4", "ppo", "rloo", "grpo", "dpo", "dpo_kwise"], methods
    assert methods["ppo"]["win_rate"] == s["gold_win_rate"] and methods["ppo"]["kl"] == s["final_kl"]
    for name, m in methods.items():
        assert m["win_rate"] >= (MIN_WIN_RATE if name != "bon4" else 0.6), (name, m)
        assert m["gold_gain"] > 0.8 and m["samples"] == s["samples"], (name, m)
        assert name == "bon4" or m["seconds"] > 0, (name, m)
        row = f"| {m['label']} | {m['trained_on']} | {m['win_rate']:.1%} ± {m['win_rate_stderr']:.1%} |"
        assert row in report, (name, row)
        assert f"{m['label']}  " in proc.stdout and f"{m['win_rate']:.1%}" in proc.stdout, name


def test_every_demo_policy_writes_healthy_text(demo_run):
    """Judged by more than one number: each method's held-out samples end, hold no broken bytes and stay within the KL
    budget, measured against SFT's own samples of the same prompts and draws."""
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "demo.json").read_text())
    sft = json.loads((out / "eval" / "eval.json").read_text())["policies"]["sft"]
    for name, m in s["methods"].items():
        assert m["eos_rate"] >= sft["eos_rate"] - EOS_POINTS, (name, m["eos_rate"], sft["eos_rate"])
        assert m["broken_rate"] <= sft["broken_rate"] + BROKEN_POINTS, (name, m["broken_rate"], sft["broken_rate"])
        assert 0 < m["kl"] < HealthConfig().kl_budget, (name, m["kl"])
        assert m["repeated_ngram_rate"] <= sft["repeated_ngram_rate"] + 0.05, name
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| SFT |")]
    assert len(rows) == 1 and "100%" in rows[0]


def test_people_judge_the_demo_blind_and_the_careless_one_is_caught(demo_run):
    """The demo's campaign: scripted people rank every policy's completions blind through the ranking app; their order
    puts SFT last as the gold does, and the careless annotator is caught by gold tasks and by the reliability fit."""
    out, proc = demo_run
    c = json.loads((out / "demo.json").read_text())["campaign"]
    assert c["order"][-1] == c["gold_order"][-1] == "sft", c
    assert c["kendall_tau"] > 0.3, c
    for name, r in c["ratings"].items():
        assert r["low"] <= r["rating"] <= r["high"], name
    people = c["annotators"]
    careful = [a for a in people if a.startswith("careful")]
    assert people["careless"]["gold_accuracy"] < min(people[a]["gold_accuracy"] for a in careful)
    assert people["careless"]["weight"] < 0.2 < min(people[a]["weight"] for a in careful)
    assert "## People as the judge" in (out / "report.md").read_text()
    assert (out / "eval" / "eval_human.json").is_file() and (out / "eval" / "campaign.png").stat().st_size > 10_000
