"""`rlhf eval`: the parts that can be wrong silently (win rates, sequence log-probs under left padding, judges),
then the stage on a quick SFT policy and the builtin base, each run in a fresh process as a user runs it (slow)."""

import json
import math

import pytest
import torch

from alignment.common.errors import ConfigError
from alignment.config.loader import load_config
from alignment.evaluate import EvalConfig, load_judge, sequence_logprobs, win_rate
from alignment.runtime.generation import Responses, has_eos, left_pad
from tests.conftest import run_cli


def test_win_rate_counts_ties_half_by_hand():
    w = win_rate([3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 5.0, -1.0])  # win, tie, loss, win
    assert (w["wins"], w["ties"], w["losses"], w["n"]) == (2, 1, 1, 4)
    assert w["win_rate"] == pytest.approx(2.5 / 4)
    outcomes = [1.0, 0.5, 0.0, 1.0]
    std = math.sqrt(sum((o - 0.625) ** 2 for o in outcomes) / 3)
    assert w["stderr"] == pytest.approx(std / 2)
    assert win_rate([1.0, 2.0], [1.0, 2.0])["win_rate"] == 0.5  # a policy against itself


def test_left_pad_puts_every_prompt_against_the_right_edge():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def naive_logprob(model, prompt: list[int], response: list[int], temperature: float) -> float:
    """One unpadded row, token by token: sum_t log softmax(logits / T)[y_t] given the prompt and y_<t."""
    total = 0.0
    for t, token in enumerate(response):
        ids = torch.tensor([prompt + response[:t]])
        logits = model(input_ids=ids).logits[0, -1].double() / temperature
        total += torch.log_softmax(logits, -1)[token].item()
    return total


@torch.no_grad()
def test_sequence_logprobs_match_a_naive_unpadded_loop(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    eos, pad = 2, 0
    prompts = [[1, 10, 11, 12], [1, 20]]
    # Row 0 ends with EOS and is padded after it (those tokens must not count); row 1 was cut at T tokens.
    responses = torch.tensor([[30, 31, eos, pad], [40, 41, 42, 43]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    queries, query_mask = left_pad(prompts, pad)
    got = sequence_logprobs(
        model, Responses(queries, query_mask, responses, mask, has_eos(responses, eos)), temperature=0.7
    )
    want = [
        naive_logprob(model, prompts[0], [30, 31, eos], 0.7),
        naive_logprob(model, prompts[1], [40, 41, 42, 43], 0.7),
    ]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-4, rtol=1e-5)


def prompt_aware(completion: str, prompt: str) -> int:
    """A two-argument judge whose parameters come completion first: passed by name, the order cannot swap them."""
    return len(completion) - 10 * len(prompt)


def wordy(prompt: str, completion: str) -> str:
    """Named right, but returns text, not a number."""
    return completion


def test_judge_takes_prompt_and_completion_by_name():
    assert load_judge("alignment.assets.gold:gold_reward")("Review of the cafe:", "the food was great.") == 1.0
    judge = load_judge(f"{__name__}:prompt_aware")
    assert judge("x", "abcd") == -6.0


def test_judge_errors_name_the_key():
    with pytest.raises(ConfigError, match="judge: cannot import 'alignment.nope'"):
        load_judge("alignment.nope:f")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        load_judge("alignment.assets.reviews:nope")
    with pytest.raises(ConfigError, match="must return a number"):
        load_judge(f"{__name__}:wordy")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "'policies' is empty"),
        (["policies={a: x}", "judge=alignment.assets.reviews.gold_reward"], "'judge' must be module:function"),
        (["policies={a: x}", "pairs=[[a, b]]"], "'pairs[0]' must name two policies"),
        (["policies={a: x}", "generation.temperature=0"], "'generation.temperature' must be > 0"),
        (["policies={a: x}", "generation.num_sample=3"], "did you mean 'generation.num_samples'"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(EvalConfig, None, ["output_dir=out", "data.path=p.jsonl", *overrides])


# ----------------------------------------------------------------------------------------------
# The stage, in a fresh process

JUDGE = "judge=alignment.assets.gold:gold_reward"


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


@pytest.mark.slow
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
    assert full["config"]["judge"] == "alignment.assets.gold:gold_reward"
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == held_out_prompts * 4
    assert samples[0]["sft"]["completion"] == samples[0]["sft_again"]["completion"]
    from alignment.assets.gold import gold_reward

    assert [s["sft"]["judge"] for s in samples] == [gold_reward(s["sft"]["completion"]) for s in samples]
    assert "win rates" in r.stdout and "Review of the" in r.stdout
    # Like every stage: a manifest of what it read and wrote, and one closing line.
    written = json.loads((out / "manifest.json").read_text())
    assert written["stage"] == "eval" and written["inputs"]["judge"] == "alignment.assets.gold:gold_reward"
    assert written["outputs"]["eval"] == "eval.json" and written["metrics"] == full_metrics(full)
    assert r.stdout.strip().splitlines()[-1].startswith(f"eval: done; wrote {out}")


def full_metrics(result: dict) -> dict:
    from alignment.evaluate import flat_metrics

    return flat_metrics(result)


@pytest.mark.slow
def test_default_reference_is_the_base_a_policy_was_trained_from(sft_dir, untrained_adapter):
    from alignment.evaluate import base_of, policy_path

    assert base_of(str(untrained_adapter), "policies.a") == str((sft_dir / "merged").resolve())
    assert policy_path(base_of(str(sft_dir), "policies.a"), "reference") == policy_path("builtin:tiny-llama", "x")
    assert policy_path(str(sft_dir), "policies.a") == str((sft_dir / "merged").resolve())


@pytest.mark.slow
def test_bad_judge_is_one_line_error(tmp_path):
    r = run_cli(
        "eval",
        f"output_dir={tmp_path}",
        "policies={base: builtin:tiny-llama}",
        "judge=alignment.assets.nope:gold",
        "data.path=builtin:reviews-prompts",
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "judge" in r.stderr and "alignment.assets.nope" in r.stderr
    assert not (tmp_path / "eval.jsonl").exists()
