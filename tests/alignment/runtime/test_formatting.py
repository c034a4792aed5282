import pytest

from alignment.common.errors import UserError
from alignment.runtime.formatting import IGNORE, collate, encode_sft, pack
from alignment.runtime.tiny import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_prompt_completion_masks_the_prompt_and_appends_eos(tok):
    ex = encode_sft(tok, {"prompt": "Review of the cafe:", "completion": " the food was good."}, 64)
    prompt_len = len(tok("Review of the cafe:")["input_ids"])
    assert ex["labels"][:prompt_len] == [IGNORE] * prompt_len
    assert ex["labels"][prompt_len:] == ex["input_ids"][prompt_len:]
    assert ex["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(ex["input_ids"][prompt_len:-1]) == " the food was good."


def test_completion_only_off_trains_on_everything(tok):
    ex = encode_sft(tok, {"prompt": "Review of the cafe:", "completion": " good."}, 64, completion_only=False)
    assert ex["labels"] == ex["input_ids"]


def test_messages_train_on_assistant_turns_only(tok):
    msgs = [
        {"role": "user", "content": "Review of the cafe:"},
        {"role": "assistant", "content": "the food was good."},
        {"role": "user", "content": "And the hotel?"},
        {"role": "assistant", "content": "the room was clean."},
    ]
    ex = encode_sft(tok, {"messages": msgs}, 128)
    trained = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE])
    assert trained == "the food was good.</s>\nthe room was clean.</s>\n"


def test_conversational_prompt_completion_equals_messages(tok):
    prompt = [{"role": "user", "content": "Review of the cafe:"}]
    completion = [{"role": "assistant", "content": "the food was good."}]
    a = encode_sft(tok, {"prompt": prompt, "completion": completion}, 64)
    b = encode_sft(tok, {"messages": prompt + completion}, 64)
    assert a == b


@pytest.mark.parametrize(
    "row, message",
    [
        ({"text": "x"}, "expected 'prompt'+'completion' or 'messages' columns, found: text"),
        ({"prompt": "a", "completion": ""}, "'completion' must be a non-empty"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}, "both be strings or both"),
    ],
)
def test_bad_rows_name_the_row(tok, row, message):
    with pytest.raises(UserError) as err:
        encode_sft(tok, row, 64, where="data.jsonl:7")
    assert str(err.value).startswith("data.jsonl:7: ") and message in str(err.value)


def test_truncation_that_removes_every_target_is_an_error(tok):
    with pytest.raises(UserError, match="nothing left to learn from"):
        encode_sft(tok, {"prompt": "Review of the cafe: " * 10, "completion": " good."}, 8, where="r")


def test_pack_keeps_examples_whole_with_restarting_positions():
    examples = [{"input_ids": list(range(n)), "labels": list(range(n))} for n in (5, 3, 4, 2, 6)]
    packed = pack(examples, max_length=8)
    assert sorted(len(r["input_ids"]) for r in packed) == [4, 8, 8]  # best fit decreasing: 6+2, 5+3, 4
    assert sum(len(r["input_ids"]) for r in packed) == 20
    for row in packed:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        for s in starts:
            assert row["labels"][s] == IGNORE  # never predict an example's first token from the previous one


def test_collate_pads_right_and_zero_weight_examples_carry_no_targets():
    examples = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = collate(examples, pad_id=0, weights=[1.0, 0.0])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE] * 3]


def test_packed_rows_attend_within_their_example_only(tiny_llama_dir):
    """Through the real model: a packed row gives each example the logits it gets alone."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    a, b = [3, 4, 5, 6], [7, 8, 9]
    batch = collate(pack([{"input_ids": a, "labels": a}, {"input_ids": b, "labels": b}], 16), pad_id=0)
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]
        alone_a = model(torch.tensor([a])).logits[0]
        alone_b = model(torch.tensor([b])).logits[0]
    order = batch["input_ids"][0].tolist()
    first = alone_a if order[:4] == a else alone_b
    second = alone_b if order[:4] == a else alone_a
    torch.testing.assert_close(packed[: len(first)], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[len(first) :], second, atol=1e-5, rtol=1e-5)
