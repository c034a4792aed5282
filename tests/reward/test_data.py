"""Preference rows -> rankings -> batches: both schemas, implicit prompts, bad rows named by file:row."""

import math

import pytest
import torch

from alignment.common.errors import UserError
from alignment.runtime import tiny
from reward import data as D
from reward.rankings import synthetic
from tests.conftest import write_jsonl

KWISE = {
    "prompt": "Review of the cafe:",
    "completions": [" great.", " bad.", " ok."],
    "ranks": [1, 3, 2],
    "annotator": "ann",
    "task_id": 7,
    "meta": {},
}


def test_kwise_and_pairwise_rows_from_a_file(tmp_path):
    rows = [
        KWISE,
        {"prompt": "P:", "chosen": " yes", "rejected": " no", "margin": 2},
        {"chosen": "Q: the food was good", "rejected": "Q: the food was bad"},
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}],
        },
    ]
    got = D.load_rankings(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [r["ranks"] for r in got] == [[1, 3, 2], [1, 2], [1, 2], [1, 2]]
    assert got[0]["annotator"] == "ann" and got[1]["annotator"] == "unknown"
    assert got[1]["margin"] == 2.0 and got[0]["margin"] is None
    # Implicit prompt: the common prefix, cut back to a word boundary.
    assert (got[2]["prompt"], got[2]["completions"]) == ("Q: the food was", [" good", " bad"])
    assert got[3]["prompt"] == [{"role": "user", "content": "hi"}]
    assert got[3]["completions"][1] == [{"role": "assistant", "content": "go away"}]


def test_datasets_folder_with_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = synthetic.rankings(12, k=3)
    DatasetDict({"train": Dataset.from_list(rows[:8]), "test": Dataset.from_list(rows[8:])}).save_to_disk(
        str(tmp_path / "kwise")
    )
    train = D.load_rankings(str(tmp_path / "kwise"), "train")
    test = D.load_rankings(str(tmp_path / "kwise"), "test")
    assert len(train) == 8 and len(test) == 4
    assert train[0]["completions"] == rows[0]["completions"] and train[0]["ranks"] == rows[0]["ranks"]


@pytest.mark.parametrize(
    "row,k,message",
    [
        ({**KWISE, "completions": [" a"], "ranks": [1]}, None, "at least 2 completions"),
        ({**KWISE, "completions": [" a", " b", " c", " d"], "ranks": [1, 2, 3, 4]}, 3, "expected K=3"),
        ({**KWISE, "ranks": [1, 2]}, None, "2 ranks for 3 completions"),
        ({**KWISE, "ranks": [0, 1, 2]}, None, "integers >= 1"),
        ({**KWISE, "ranks": ["1", 2, 3]}, None, "integers >= 1"),
        ({**KWISE, "completions": [" a", "  ", " c"]}, None, "completion 2 is empty"),
        ({"prompt": "p", "chosen": "", "rejected": " no"}, None, "'chosen' is missing, empty"),
        ({"prompt": "p", "chosen": " yes"}, None, "'rejected' is missing"),
        ({"prompt": "p", "chosen": " yes", "rejected": " no", "margin": "big"}, None, "'margin' must be a number"),
        ({"prompt": "p", "answer": " yes"}, None, "found: answer, prompt"),
        ({"completions": [" a", " b"], "ranks": [1, 2]}, None, "'prompt' is missing"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, row, k, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [KWISE, row])
    with pytest.raises(UserError) as e:
        D.load_rankings(path, k=k)
    assert str(e.value).startswith(f"{path}:2: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_split_by_prompt_keeps_prompts_apart():
    rankings = [D.to_ranking(r, f"x:{i}") for i, r in enumerate(synthetic.rankings(200, k=2))]
    train, held = D.split_by_prompt(rankings, 0.2, seed=3)
    assert len(train) + len(held) == 200 and held
    assert not {D.prompt_key(r["prompt"]) for r in train} & {D.prompt_key(r["prompt"]) for r in held}
    n_prompts = len({D.prompt_key(r["prompt"]) for r in rankings})
    assert len({D.prompt_key(r["prompt"]) for r in held}) == round(0.2 * n_prompts)
    assert D.split_by_prompt(rankings, 0.2, seed=3)[1] == held  # seeded


def test_collate_flattens_variable_k_and_scatters_back():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.resolve("builtin:tiny-llama"))
    rankings = [
        D.to_ranking(KWISE, "x:1"),
        D.to_ranking({"prompt": "P:", "chosen": " yes", "rejected": " no", "margin": 1.5}, "x:2"),
    ]
    examples = [D.encode(tok, r, 64) for r in rankings]
    batch = D.collate(examples, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 5  # 3 + 2 completions, no padding completions
    assert batch["valid"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["margins"][1, 0, 1].item() == 1.5 and batch["margins"][0].abs().sum() == 0
    # Every row ends with EOS (the score is read there), and its real length matches its mask.
    for row, ids in enumerate([ids for e in examples for ids in e["input_ids"]]):
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == ids and ids[-1] == tok.eos_token_id
    flat = torch.arange(5, dtype=torch.float32)
    grid = D.to_grid(flat, batch["slot"], 2, 3)
    assert grid.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 0.0]]


def test_soft_labels_reach_the_batch_as_pair_probabilities():
    """A scored ranking's P(i beats j) = sigmoid(score_i - score_j), a pair's chosen_probability; hard rows: none."""
    scored = D.to_ranking({"prompt": "a", "completions": ["b", "c", "d"], "scores": [0.0, 2.0, 800.0]}, "x:1")
    probability = D.to_ranking({"prompt": "a", "chosen": "b", "rejected": "c", "chosen_probability": 0.8}, "x:2")
    prob = D.pair_probabilities(scored)
    assert prob[1][0] == pytest.approx(1 / (1 + math.exp(-2.0))) and prob[0][2] == 0.0 and prob[2][1] == 1.0
    assert D.pair_probabilities(probability) == [[0.5, 0.8], [pytest.approx(0.2), 0.5]]
    assert D.pair_probabilities(D.to_ranking(KWISE, "x:3")) is None
    batch = D.collate([{"input_ids": [[1, 2]] * len(r["completions"]), "ranks": r["ranks"], "margin": None,
                        "pair_probabilities": D.pair_probabilities(r)} for r in (scored, probability)], 0)  # fmt: skip
    assert batch["soft"].tolist() == [True, True] and batch["soft_prob"][1, 0, 1].item() == pytest.approx(0.8)
    assert batch["soft_prob"][1, 2].abs().sum() == 0  # padding of the K = 2 row


def test_synthetic_rankings_follow_the_gold_rule():
    rows = synthetic.rankings(400, k=4, seed=5)
    best = synthetic.best_achievable(rows)
    # The sampled labels agree with the gold rule about as often as the noise model says they should.
    assert abs(best["empirical"] - best["expected"]) < 0.03
    assert 0.7 < best["expected"] < 0.95
    for row in rows[:5]:
        D.to_ranking(row, "synthetic")


def test_chat_rows_are_scored_after_the_generation_prompt():
    from transformers import AutoTokenizer

    from reward.model import encode_text

    tok = AutoTokenizer.from_pretrained(tiny.resolve("builtin:tiny-llama"))
    prompt = [{"role": "user", "content": "Review of the cafe:"}]
    completion = [{"role": "assistant", "content": " the food was great."}]
    ids, n = encode_text(tok, prompt, completion, 128)
    head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    want = (
        tok(head, add_special_tokens=False)["input_ids"]
        + tok(" the food was great.", add_special_tokens=False)["input_ids"]
    )
    assert ids == want + [tok.eos_token_id] and n == len(ids) - len(tok(head, add_special_tokens=False)["input_ids"])
    # Truncation keeps the end, where the score is read.
    short, _ = encode_text(tok, prompt, completion, 5)
    assert short == ids[-5:]


def test_implicit_prompt_edge_cases():
    assert D.implicit_prompt("good", "bad") == ("", "good", "bad")
    assert D.implicit_prompt("Q: a b", "Q: a b c") == ("Q: a", " b", " b c")
    same = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert D.implicit_prompt(same, same) == (same[:1], same[1:], same[1:])
