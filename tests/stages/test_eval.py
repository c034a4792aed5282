"""`rlhf eval` on a quick SFT policy and the builtin base, each run in a fresh process as a user runs it."""

import json
import math

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

JUDGE = "judge=alignment.assets.reviews:gold_reward"


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "sft"
    r = run_cli("sft", "configs/sft.yaml", f"output_dir={out}", "train.max_steps=20", "checkpoint.save_steps=0")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def untrained_adapter(sft_dir):
    """A fresh LoRA adapter folder on the SFT merged model: LoRA's B starts at zero, so it is that model exactly."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str((sft_dir / "merged").resolve()))
    folder = sft_dir.parent / "adapter"
    get_peft_model(base, LoraConfig(r=4, target_modules="all-linear")).save_pretrained(folder)
    return folder


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_eval_compares_sft_with_itself_an_adapter_and_the_base(tmp_path, sft_dir, untrained_adapter):
    out = tmp_path / "eval"
    r = run_cli(
        "eval",
        "configs/eval.yaml",
        f"output_dir={out}",
        f"policies={{sft: {sft_dir}, sft_again: {sft_dir}, adapter: {untrained_adapter}, base: builtin:tiny-llama}}",
        f"reference={sft_dir}",
        "reward_model=",
        JUDGE,
        "generation.num_samples=4",
        "pairs=[[sft_again, sft], [sft, base]]",
    )
    assert r.returncode == 0, r.stderr[-3000:]

    lines = read_jsonl(out / "eval.jsonl")
    policies = {line["policy"]: line for line in lines if line["kind"] == "policy"}
    wins = {(line["policy"], line["against"], line["by"]): line for line in lines if line["kind"] == "win_rate"}
    assert set(policies) == {"sft", "sft_again", "adapter", "base"}
    assert set(wins) == {("sft_again", "sft", "judge"), ("sft", "base", "judge")}
    held_out_prompts = 6  # builtin:reviews-prompts, split test
    for m in policies.values():
        assert m["samples"] == held_out_prompts * 4
        assert math.isfinite(m["judge"]) and m["length"] >= 1 and 0 <= m["eos_rate"] <= 1

    # The same policy on the same draws: every comparison ties, and it is its own reference.
    assert wins[("sft_again", "sft", "judge")]["win_rate"] == 0.5
    assert wins[("sft_again", "sft", "judge")]["ties"] == held_out_prompts * 4
    assert policies["sft"]["kl"] == 0.0 and policies["sft_again"]["kl"] == 0.0
    # An adapter folder loads on its recorded base; untrained, it is the SFT model (bit for bit on CPU).
    assert policies["adapter"]["kl"] == 0.0 and policies["adapter"]["judge"] == policies["sft"]["judge"]
    assert policies["base"]["kl"] > 0.1  # the untuned base is far from the SFT policy
    base_vs = wins[("sft", "base", "judge")]
    assert base_vs["wins"] + base_vs["ties"] + base_vs["losses"] == base_vs["n"] == held_out_prompts * 4

    # eval.json holds the same numbers and the resolved config; samples.jsonl every completion side by side.
    full = json.loads((out / "eval.json").read_text())
    assert full["policies"]["sft"]["judge"] == policies["sft"]["judge"]
    assert full["config"]["judge"] == "alignment.assets.reviews:gold_reward"
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == held_out_prompts * 4
    assert samples[0]["sft"]["completion"] == samples[0]["sft_again"]["completion"]
    from alignment.assets.reviews import gold_reward

    assert [s["sft"]["judge"] for s in samples] == [gold_reward(s["sft"]["completion"]) for s in samples]
    assert "win rates" in r.stdout and "Review of the" in r.stdout


def test_default_reference_is_the_base_a_policy_was_trained_from(sft_dir, untrained_adapter):
    from alignment.evaluate import base_of, policy_path

    assert base_of(str(untrained_adapter), "policies.a") == str((sft_dir / "merged").resolve())
    assert policy_path(base_of(str(sft_dir), "policies.a"), "reference") == policy_path("builtin:tiny-llama", "x")
    assert policy_path(str(sft_dir), "policies.a") == str((sft_dir / "merged").resolve())


def test_bad_judge_is_one_line_error(tmp_path):
    r = run_cli(
        "eval", f"output_dir={tmp_path}", "policies={base: builtin:tiny-llama}", "judge=alignment.assets.nope:gold"
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "judge" in r.stderr and "alignment.assets.nope" in r.stderr
    assert not (tmp_path / "eval.jsonl").exists()
