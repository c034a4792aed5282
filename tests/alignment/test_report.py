"""write_report on a synthetic run folder: the metrics files the stages write, made up here."""

import json
import math
import os
import random

import pytest

from alignment.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("overoptimization.png", "gold_reward.png", "training.png")


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def make_run(root, gold=True):
    """A run folder shaped like the demo's: sft/, reward/, ppo/ metrics and eval/eval.json."""
    rng = random.Random(0)
    write_jsonl(
        root / "sft" / "metrics.jsonl", [{"step": s, "train/loss": 2.0 / (1 + s / 20)} for s in range(10, 101, 10)]
    )
    write_jsonl(
        root / "reward" / "metrics.jsonl",
        [{"step": s, "train/loss": 0.69 - s / 500, "reward/accuracy": 0.5 + s / 400} for s in range(5, 101, 5)]
        + [{"step": 100, "eval/accuracy": 0.71}],
    )
    write_json(root / "reward" / "eval.json", {"accuracy": 0.71, "pairs": 438, "loss": 0.6})
    ppo = []
    for step in range(1, 61):
        kl = 0.15 * step + rng.gauss(0, 0.3)
        row = {"step": step, "objective/kl": kl, "objective/scores": math.log1p(kl) + rng.gauss(0, 0.1)}
        row["objective/rlhf_reward"] = row["objective/scores"] - 0.05 * kl
        if gold:  # rises, then falls past KL ~ 5: the overoptimisation the plot is for
            row["objective/gold"] = kl - kl**2 / 10 + rng.gauss(0, 0.2)
        ppo.append(row)
    write_jsonl(root / "ppo" / "metrics.jsonl", ppo)
    write_json(
        root / "eval" / "eval.json",
        {
            "reference": str(root / "sft" / "merged"),
            "policies": {
                "sft": {"policy": "sft", "judge": 0.12, "judge_std": 1.5, "kl": 0.0, "samples": 96},
                "ppo": {"policy": "ppo", "judge": 1.84, "judge_std": 1.1, "kl": 4.2, "samples": 96},
            },
            "win_rates": [
                {"policy": "ppo", "against": "sft", "by": "judge", "win_rate": 0.77, "stderr": 0.04},
                {"policy": "ppo", "against": "sft", "by": "reward", "win_rate": 0.9, "stderr": 0.03},
            ],
        },
    )


def assert_pngs(folder):
    for name in PLOTS:
        with open(folder / name, "rb") as f:
            data = f.read()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name  # a real image, not an empty canvas


def test_report_has_the_results_and_links_valid_plots(tmp_path):
    make_run(tmp_path)
    path = write_report(str(tmp_path), {"accuracy_ceiling": 0.83})
    assert path == str(tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in text
    assert_pngs(tmp_path)
    assert "| Gold reward, SFT policy | 0.120 ± 1.50 (std) |" in text
    assert "| Gold reward, PPO policy | 1.840 ± 1.10 (std) |" in text
    assert "| Gold reward gain (PPO - SFT) | +1.720 |" in text
    assert "| Gold win rate, PPO over SFT (ties half) | 77.0% ± 4.0% |" in text
    assert "| Reward model held-out accuracy | 71.0% |" in text
    assert "| Best accuracy achievable under the annotators' noise | 83.0% |" in text
    assert "| KL(PPO ‖ reference), held-out prompts, reference sft/merged | 4.200 nats |" in text


def test_given_figures_win_and_missing_parts_read_as_na(tmp_path):
    make_run(tmp_path, gold=False)
    os.remove(tmp_path / "eval" / "eval.json")
    os.remove(tmp_path / "sft" / "metrics.jsonl")
    text = open(write_report(str(tmp_path), {"gold_win_rate": 0.6})).read()
    assert "| Gold win rate, PPO over SFT (ties half) | 60.0% |" in text
    assert "| Gold reward, SFT policy | n/a |" in text
    assert "| Best accuracy achievable under the annotators' noise | n/a |" in text
    assert "last PPO update" in text  # no eval: the KL comes from the training metrics
    assert_pngs(tmp_path)


def test_gold_per_update_from_the_samples_ppo_logged(tmp_path):
    from alignment.report import gold_from_samples

    make_run(tmp_path, gold=False)
    rows = [
        {
            "step": 1,
            "table": "samples",
            "prompt": "Review of the cafe:",
            "completion": " the food was bad.",
            "score": 0.1,
        },
        {
            "step": 1,
            "table": "samples",
            "prompt": "Review of the cafe:",
            "completion": " the food was great.",
            "score": 1,
        },
        {
            "step": 30,
            "table": "samples",
            "prompt": "Review of the gym:",
            "completion": " great and lovely.",
            "score": 2,
        },
    ]
    write_jsonl(tmp_path / "ppo" / "samples.jsonl", rows)
    assert gold_from_samples(rows, "alignment.assets.gold:gold_reward") == {1: 0.0, 30: 2.0}
    text = open(write_report(str(tmp_path), {}, gold="alignment.assets.gold:gold_reward")).read()
    assert "(2 updates, ppo/samples.jsonl)" in text
    assert_pngs(tmp_path)


def test_other_folders_are_named(tmp_path):
    make_run(tmp_path / "round-1")
    text = open(write_report(str(tmp_path), {}, folders={"eval": "round-1/eval", "ppo": "round-1/ppo"})).read()
    assert "| Gold win rate, PPO over SFT (ties half) | 77.0% ± 4.0% |" in text
    assert "| Reward model held-out accuracy | n/a |" in text  # reward/ is not where the folders say


def test_empty_run_folder_still_writes_a_report(tmp_path):
    text = open(write_report(str(tmp_path), {})).read()
    assert text.count("n/a") >= 5
    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_unknown_figure_is_named():
    with pytest.raises(ValueError, match="gold_winrate"):
        write_report("/nonexistent", {"gold_winrate": 0.7})


def comparison_eval():
    """An eval.json of SFT and three methods, as the demo's one evaluation writes it."""
    policy = lambda name, gold, kl: {"policy": name, "judge": gold, "judge_std": 1.0, "kl": kl, "samples": 100}  # noqa: E731
    win = lambda name, rate, by="judge": {"policy": name, "against": "sft", "by": by, "win_rate": rate, "stderr": 0.02}  # noqa: E731
    return {
        "policies": {
            "sft": policy("sft", 0.1, 0.0),
            "ppo": policy("ppo", 1.6, 3.0),
            "dpo": policy("dpo", 1.1, 1.5),
            "grpo": {"policy": "grpo", "samples": 100},
        },  # fmt: skip
        "win_rates": [
            win("ppo", 0.84),
            win("ppo", 0.95, by="reward"),
            win("dpo", 0.72),
            {**win("dpo", 0.6), "against": "ppo"},
        ],  # fmt: skip
    }


def test_method_figures_read_each_method_against_sft():
    from alignment.report import method_figures

    m = method_figures(comparison_eval(), ["ppo", "dpo", "grpo"], {"ppo": 106.0, "dpo": 40.5})
    assert list(m) == ["ppo", "dpo", "grpo"]
    assert m["ppo"] == {"gold": 1.6, "gold_std": 1.0, "gold_gain": pytest.approx(1.5), "win_rate": 0.84,
                        "win_rate_stderr": 0.02, "kl": 3.0, "seconds": 106.0, "samples": 100}  # fmt: skip
    assert m["dpo"]["win_rate"] == 0.72  # over SFT by the judge, not over PPO nor by the reward model
    assert m["dpo"]["gold_gain"] == pytest.approx(1.0)
    # a method the evaluation has no gold or win rate for reads as None, not an error
    assert m["grpo"]["gold"] is None and m["grpo"]["gold_gain"] is None and m["grpo"]["win_rate"] is None
    assert m["grpo"]["seconds"] is None


def test_methods_table_in_markdown_and_text():
    from alignment.report import method_figures, methods_table, methods_text

    m = method_figures(comparison_eval(), ["ppo", "grpo"], {"ppo": 106.0})
    m["ppo"].update(label="PPO", trained_on="online samples")
    table = methods_table(m).splitlines()
    assert table[0] == (
        "| method | trains on | gold win rate over SFT | gold reward (gain) | KL to SFT (nats) | training time |"
    )
    assert table[2] == "| PPO | online samples | 84.0% ± 2.0% | 1.60 (+1.50) | 3.00 | 106 s |"
    assert table[3] == "| grpo |  | n/a | n/a | n/a | n/a |"
    text = methods_text(m)
    assert text[0].split("  ")[0] == "method" and "trains on" not in text[0]
    assert text[1].split() == ["PPO", "84.0%", "±", "2.0%", "1.60", "(+1.50)", "3.00", "106", "s"]
    column = text[0].index("gold reward")  # aligned columns
    assert text[1][column:].startswith("1.60 (+1.50)") and text[2][column:].startswith("n/a")


def test_report_with_methods_has_the_comparison(tmp_path):
    from alignment.report import method_figures

    make_run(tmp_path)
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    m = method_figures(evaluation, ["ppo"], {"ppo": 99.0})
    m["ppo"].update(label="PPO", trained_on="online samples")
    text = open(write_report(str(tmp_path), {}, methods=m)).read()
    assert (
        "## Methods compared" in text and "| PPO | online samples | 77.0% ± 4.0% | 1.84 (+1.72) | 4.20 | 99 s |" in text
    )
    assert "| Gold win rate, PPO over SFT (ties half) | 77.0% ± 4.0% |" in text  # the PPO headline as before
    assert_pngs(tmp_path)
