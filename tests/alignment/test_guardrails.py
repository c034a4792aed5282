"""Guardrails in real runs: each stage driven over a threshold prints its one-line warning, and `stop_on_kl` stops.

RLOO against rewards that pay for not stopping and for broken bytes (the failures DPO showed on other CPUs), then
the KL budget with `health.stop_on_kl`; DPO at a high learning rate, watched through its own samples and its chosen
log-probs."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

ENV = {"OMP_NUM_THREADS": "1"}
RLOO = [
    "configs/rloo.yaml", "run=", "model.name_or_path=builtin:tiny-llama", "reward.path=null",
    "data.path=builtin:reviews-prompts", "rollout.per_device_batch_size=16", "rollout.response_length=16",
    "rollout.temperature=1.0", "train.learning_rate=2e-2", "train.lr_from_beta=null", "kl.coef=0.01",
    "train.sample_steps=0", "checkpoint.save_steps=0",
]  # fmt: skip


def runaway(prompts: list[str], completions: list[str]) -> list[float]:
    """Pays for every word and more for every broken character: a policy that learns it stops ending and breaks."""
    return [len(c.split()) + 3.0 * c.count("\ufffd") for c in completions]


def silence(prompts: list[str], completions: list[str]) -> list[float]:
    """Costs a point per 4 characters: only the empty answer is free. (A point a word let a policy on an AMD EPYC
    find 16 tokens with no space in them instead: 1-2 "words", never an empty answer.)"""
    return [-len(c) / 4 for c in completions]


def metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": warning at step " in line]


def test_rloo_warns_when_completions_stop_ending_and_break(tmp_path):
    out = tmp_path / "rloo"
    r = run_cli("ppo", *RLOO, f"output_dir={out}", "reward.function=tests.alignment.test_guardrails:runaway",
                "rollout.missing_eos_penalty=null", "train.total_episodes=320", "health.kl_budget=1000", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = metrics(out)
    first, last = rows[0], rows[-1]
    for name in ("completions/eos_rate", "completions/clipped_ratio", "completions/broken_rate",
                 "completions/mean_length", "completions/repeated_ngram_rate", "completions/distinct_2"):  # fmt: skip
        assert name in last, name
    assert last["completions/eos_rate"] < first["completions/eos_rate"] - 0.1, (first, last)
    found = warnings_in(r.stderr)
    assert any("EOS rate" in line and "below the reference's" in line for line in found), r.stderr[-3000:]
    assert any("broken-character rate" in line for line in found), r.stderr[-3000:]
    assert all(line.count("\n") == 0 and line.startswith("[") for line in found)


def test_rloo_warns_when_answers_turn_empty(tmp_path):
    sft, out = tmp_path / "sft", tmp_path / "rloo"
    # a briefly fine-tuned base that answers in words (the embedded base ends at once after a title)
    r = run_cli("sft", "configs/sft.yaml", f"output_dir={sft}", "data.limit=256", "data.eval_size=0",
                "train.max_steps=40", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("ppo", *RLOO, f"output_dir={out}", f"model.name_or_path={sft}", "train.total_episodes=320",
                "reward.function=tests.alignment.test_guardrails:silence", "health.kl_budget=1000", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    first, last = metrics(out)[0], metrics(out)[-1]
    assert last["completions/empty_rate"] > first["completions/empty_rate"] + 0.05, (first, last)
    found = [line for line in warnings_in(r.stderr) if "empty answers" in line]
    assert len(found) >= 1 and "above the reference's" in found[0], r.stderr[-3000:]


def test_stop_on_kl_ends_the_run_over_its_budget_and_saves_the_policy(tmp_path):
    out = tmp_path / "rloo"
    r = run_cli("ppo", *RLOO, f"output_dir={out}", "reward.function=tests.alignment.test_guardrails:runaway",
                "train.total_episodes=640", "health.kl_budget=0.5", "health.stop_on_kl=true", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert any("KL to the reference" in line and "over the budget of 0.5" in line for line in warnings_in(r.stderr))
    assert "ppo: stopping at step" in r.stderr
    steps = [row["step"] for row in metrics(out)]
    assert max(steps) < 40 and (out / "adapter_model.safetensors").is_file()


def test_dpo_watches_its_own_samples_and_the_chosen_log_prob(tmp_path):
    out = tmp_path / "dpo"
    r = run_cli("dpo", "configs/dpo.yaml", "run=", "model.name_or_path=builtin:tiny-llama", f"output_dir={out}",
                "data.path=builtin:reviews-rankings", "data.eval_path=null", "data.limit=96", "train.learning_rate=2e-2",
                "train.epochs=2", "train.log_steps=4", "train.eval_steps=12", "health.logp_drop=0.5",
                "health.samples=16", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = metrics(out)
    assert any("reference/completions/eos_rate" in row for row in rows)
    looked = [row for row in rows if "completions/eos_rate" in row]
    assert len(looked) >= 2 and all("objective/kl" in row for row in looked)
    assert any("chosen log-prob" in line and "below its start" in line for line in warnings_in(r.stderr))
    final = json.loads((out / "eval.json").read_text())
    assert "completions/broken_rate" in final and final["objective/kl"] > 0


def contradicting_rows(folder) -> tuple[str, str]:
    """Training pairs that prefer praise and held-out pairs that prefer the complaint: whatever a model learns from
    the first raises its loss on the second, so the held-out-loss guardrail must speak."""
    places = ["cafe", "museum", "hotel", "park", "cinema", "bakery", "theater", "library", "garden", "diner"]
    aspects = ["food", "staff", "view", "music"]
    rows = [(f"Review of the {p}:", f" the {a} was great.", f" the {a} was awful.") for p in places for a in aspects]
    train, held = rows[:32], rows[32:]
    paths = folder / "train.jsonl", folder / "held.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    paths[0].write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in train))
    paths[1].write_text("".join(json.dumps({"prompt": p, "chosen": r, "rejected": c}) + "\n" for p, c, r in held))
    return str(paths[0]), str(paths[1])


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_a_held_out_loss_rising_above_its_start_warns(tmp_path, stage):
    train, held = contradicting_rows(tmp_path / "data")
    out = tmp_path / stage
    r = run_cli(stage, f"configs/{stage}.yaml", "run=", "model.name_or_path=builtin:tiny-llama", f"output_dir={out}",
                f"data.path={train}", f"data.eval_path={held}", "train.epochs=2", "train.eval_steps=4",
                "train.log_steps=4", "checkpoint.save_steps=0", env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    evaluated = [row for row in metrics(out) if "eval/loss" in row]
    assert evaluated[0]["step"] == 0 and evaluated[-1]["eval/loss"] > evaluated[0]["eval/loss"] + 0.02, evaluated
    found = [line for line in warnings_in(r.stderr) if "held-out loss" in line]
    assert len(found) == 1 and "above its lowest" in found[0] and "train.eval_loss_rise" in found[0], r.stderr[-3000:]
