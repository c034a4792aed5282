"""Export: pair generation, tie handling, aggregation, split by prompt, formats, and the TRL RewardTrainer feed."""

from __future__ import annotations

import json
import random

import pytest

from alignment.common.errors import UserError
from reward.rankings.config import ExportConfig
from reward.rankings.export import build_rows, export, ranking_pairs, split_prompts
from tests.reward.rankings.conftest import add_tasks


def pairs(ranks, mode, ties="drop"):
    return [(i, j) for i, j, _ in ranking_pairs(ranks, mode, ties, random.Random(0))]


def test_pairs_modes_by_hand():
    r = [2, 1, 3]  # best is item 1, then 0, then 2
    assert sorted(pairs(r, "all")) == [(0, 2), (1, 0), (1, 2)]
    assert sorted(pairs(r, "adjacent")) == [(0, 2), (1, 0)]
    assert sorted(pairs(r, "best_vs_rest")) == [(1, 0), (1, 2)]
    gaps = {(i, j): g for i, j, g in ranking_pairs(r, "all", "drop", random.Random(0))}
    assert gaps == {(1, 0): 1, (1, 2): 2, (0, 2): 1}


def test_ties_drop_or_random():
    r = [1, 1, 3]
    assert sorted(pairs(r, "all")) == [(0, 2), (1, 2)]  # no pair inside the tie
    assert sorted(pairs(r, "adjacent")) == [(0, 2), (1, 2)]
    assert sorted(pairs(r, "best_vs_rest")) == [(0, 2), (1, 2)]
    broken = ranking_pairs(r, "all", "random", random.Random(0))
    assert len(broken) == 3 and {g for i, j, g in broken if {i, j} == {0, 1}} == {0}
    assert pairs([1, 1], "all") == []


def test_split_by_prompt_never_leaks_and_is_seeded():
    ids = list(range(20))
    test = split_prompts(ids, 0.25, seed=1)
    assert len(test) == 5 and test == split_prompts(ids, 0.25, seed=1)
    assert split_prompts(ids, 3, seed=1).__len__() == 3
    assert split_prompts([1, 2], 0.01, seed=0).__len__() == 1  # at least one when asked for a test split
    assert split_prompts([7], 0.5, seed=0) == set()  # never all prompts
    assert split_prompts(ids, 0, seed=0) == set()


def _rank_all(store, n_annotators=2, ties=False):
    users = [store.add_user(f"ann{i}", password="pw12") for i in range(n_annotators)]
    for u_index, u in enumerate(users):
        while (v := store.next_task(u, n_annotators, 60)) is not None:
            k = len(v.completions)
            ranks = list(range(1, k + 1)) if u_index == 0 else list(range(k, 0, -1))
            if ties:
                ranks[-1] = ranks[-2]
            store.submit(u, v.task_id, ranks, f"{u}-{v.task_id}", n_annotators)


@pytest.mark.slow  # the first `datasets` import alone takes about a second
def test_export_writes_loadable_datasets_split_by_prompt(store, tmp_path):
    from datasets import load_from_disk

    add_tasks(store, 10, k=3)
    _rank_all(store)
    out = tmp_path / "prefs"
    cfg = ExportConfig(
        store=store.url, output_dir=str(out), formats=["datasets", "jsonl", "parquet"], test_size=0.3, margin=True
    )
    manifest = export(cfg, store=store)
    pw, kw = load_from_disk(str(out / "pairwise")), load_from_disk(str(out / "kwise"))
    assert set(pw) == set(kw) == {"train", "test"}
    # annotator_weight: each annotator's estimated reliability as a loss weight (reward/rankings/reliability.py)
    assert pw["train"].column_names == ["prompt", "chosen", "rejected", "margin", "annotator_weight"]
    assert kw["train"].column_names == [
        "prompt",
        "completions",
        "ranks",
        "annotator",
        "task_id",
        "meta",
        "annotator_weight",
    ]
    assert len(kw["train"]) + len(kw["test"]) == 20 and len(pw["train"]) + len(pw["test"]) == 20 * 3
    assert not set(kw["train"]["prompt"]) & set(kw["test"]["prompt"])
    assert not set(pw["train"]["prompt"]) & set(pw["test"]["prompt"])
    assert manifest["prompts"] == {"train": 7, "test": 3}
    row = kw["train"][0]
    assert sorted(row["ranks"]) == [1, 2, 3] and row["annotator"] in ("ann0", "ann1")
    assert row["meta"]["n_annotators"] == 2 and sorted(row["meta"]["order_shown"]) == [0, 1, 2]
    assert json.loads(row["meta"]["task_meta"]) == {"source": "test"}
    # chosen really is the better-ranked completion of the row it came from
    first = json.loads((out / "pairwise_train.jsonl").read_text().splitlines()[0])
    kw_rows = [json.loads(line) for line in (out / "kwise_train.jsonl").read_text().splitlines()]
    src = next(r for r in kw_rows if r["prompt"] == first["prompt"])
    assert (
        src["ranks"][src["completions"].index(first["chosen"])]
        < src["ranks"][src["completions"].index(first["rejected"])]
    )
    assert (out / "kwise_test.parquet").exists() and (out / "manifest.json").exists() and (out / "config.yaml").exists()


@pytest.mark.slow  # writes `datasets` folders
def test_consensus_and_conversational_prompts(store, tmp_path):
    from datasets import load_from_disk

    store.add_task([{"role": "user", "content": "hi"}], [{"text": "a"}, {"text": "b"}, {"text": "c"}])
    store.add_task("plain prompt", [{"text": "x"}, {"text": "y"}])
    _rank_all(store, n_annotators=3)
    cfg = ExportConfig(store=store.url, output_dir=str(tmp_path / "o"), aggregate="consensus", test_size=0)
    export(cfg, store=store)
    kw = load_from_disk(str(tmp_path / "o" / "kwise"))["train"]
    assert len(kw) == 2 and set(kw["annotator"]) == {"consensus"}
    # ann0 ranks 1,2,3; ann1 and ann2 rank 3,2,1 -> means 2.33, 2, 1.67 -> consensus [3, 2, 1].
    chat_row = next(r for r in kw if r["prompt"][0]["content"] == "hi")
    assert chat_row["ranks"] == [3, 2, 1]
    assert chat_row["completions"][0] == [{"role": "assistant", "content": "a"}]
    plain_row = next(r for r in kw if r["prompt"][0]["content"] == "plain prompt")
    assert plain_row["prompt"] == [{"role": "user", "content": "plain prompt"}]  # made conversational too
    pw = load_from_disk(str(tmp_path / "o" / "pairwise"))["train"]
    assert all(isinstance(r["chosen"], list) and r["chosen"][0]["role"] == "assistant" for r in pw)


def test_tie_policies_and_filters(store):
    add_tasks(store, 2, k=3)
    _rank_all(store, n_annotators=2, ties=True)
    store.flag(store.add_user("lead", role="admin", password="pw12"), 1, "unsafe", "", admin=True)
    rows = store.rankings()
    kw, pw, counts = build_rows(rows, ExportConfig(store="x", output_dir="y"))
    assert counts["tasks_flagged"] == 1 and len(kw) == 2 and len(pw) == 2 * 2  # 3 items, 1 tied pair dropped
    kw, pw, counts = build_rows(rows, ExportConfig(store="x", output_dir="y", ties="drop_ranking", drop_flagged=False))
    assert kw == [] and counts["rankings_with_ties_dropped"] == 4
    kw, pw, _ = build_rows(rows, ExportConfig(store="x", output_dir="y", ties="random", drop_flagged=False))
    assert len(pw) == 4 * 3
    kw, _, counts = build_rows(rows, ExportConfig(store="x", output_dir="y", min_annotators=3, drop_flagged=False))
    assert kw == [] and counts["tasks_below_min_annotators"] == 2


def test_empty_store_and_bad_config_are_user_errors(store, tmp_path):
    with pytest.raises(UserError, match="no rankings"):
        export(ExportConfig(store=store.url, output_dir=str(tmp_path / "o")), store=store)
    from alignment.config.loader import load_config

    with pytest.raises(UserError, match="formats"):
        load_config(ExportConfig, None, ["store=s.db", "output_dir=o", "formats=csv"])
    with pytest.raises(UserError, match="did you mean 'pairs'"):
        load_config(ExportConfig, None, ["store=s.db", "output_dir=o", "pair=all"])


@pytest.mark.slow  # imports `datasets`
def test_rank_export_cli(store, tmp_path, capsys):
    from alignment.commands.rank import main

    add_tasks(store, 4)
    _rank_all(store, n_annotators=1)
    out = tmp_path / "cli"
    assert main(["export", f"store={store.url}", f"output_dir={out}", "formats=jsonl", "schemas=pairwise"]) == 0
    assert "pairwise" in capsys.readouterr().out
    assert (out / "pairwise_train.jsonl").exists() and not (out / "kwise").exists()
    assert main(["export", "--help"]) == 0 and "aggregate" in capsys.readouterr().out


@pytest.mark.slow
def test_export_feeds_trl_reward_trainer_unchanged(store, tmp_path):
    """The pairwise folder goes straight into TRL's RewardTrainer (tiny Llama, offline BPE tokenizer)."""
    import torch
    from datasets import load_from_disk
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast
    from trl import RewardConfig, RewardTrainer

    add_tasks(store, 12, k=3)
    _rank_all(store, n_annotators=1)
    export(ExportConfig(store=store.url, output_dir=str(tmp_path / "prefs"), test_size=0.25), store=store)
    data = load_from_disk(str(tmp_path / "prefs" / "pairwise"))

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    sentences = [f"prompt {i}: which answer is best? answer {j} to prompt {i}" for i in range(12) for j in range(3)]
    tok.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<pad>", "<eos>"]))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    wrapped.save_pretrained(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForSequenceClassification(config)
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        report_to=[], use_cpu=True, bf16=False, logging_steps=1, save_strategy="no", max_length=64,
    )  # fmt: skip
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"], processing_class=tokenizer
    )
    result = trainer.train()
    assert result.global_step == 2
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] == metrics["eval_loss"]  # finite, not nan
