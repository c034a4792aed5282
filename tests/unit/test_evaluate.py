"""The parts of `rlhf eval` that can be wrong silently: win rates, sequence log-probs under left padding, judges."""

import math

import pytest
import torch

from alignment.config import ConfigError, UserError, load_config
from alignment.evaluate import Batch, EvalConfig, left_pad, load_judge, sequence_logprobs, win_rate


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
    got = sequence_logprobs(model, Batch(queries, query_mask, responses, mask), temperature=0.7)
    want = [
        naive_logprob(model, prompts[0], [30, 31, eos], 0.7),
        naive_logprob(model, prompts[1], [40, 41, 42, 43], 0.7),
    ]
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-4, rtol=1e-5)


def prompt_aware(completion: str, prompt: str) -> int:
    """A two-argument judge: the order of its arguments shows in the result."""
    return len(completion) - 10 * len(prompt)


def test_judge_takes_completion_or_completion_and_prompt():
    assert load_judge("alignment.assets.reviews:gold_reward")("the food was great.", "Review of the cafe:") == 1.0
    judge = load_judge(f"{__name__}:prompt_aware")
    assert judge("abcd", "x") == -6.0


def test_judge_errors_name_the_key():
    with pytest.raises(ConfigError, match="judge: cannot import 'alignment.nope'"):
        load_judge("alignment.nope:f")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        load_judge("alignment.assets.reviews:nope")
    with pytest.raises(UserError, match="must return a number"):
        load_judge("alignment.assets.reviews:prompt_for")("the food was great.", "p")


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
        load_config(EvalConfig, None, ["output_dir=out", *overrides])
