"""DPO's data path: soft labels read through reward/data.py, TRL's encoding rules, the flat K-wise batch, the
soft-label loss against `dpo_loss`, and the stage config's checks. A word-level tokenizer built in memory."""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from alignment.common.errors import ConfigError, UserError
from alignment.config.loader import load_config
from alignment.dpo import data as D
from alignment.dpo import losses
from alignment.dpo.config import DPOConfig, DPODataConfig, DPOLossConfig, DPOTrainConfig
from alignment.dpo.train import batch_loss, learning_rate, metrics_from_sums, rankings_per_device
from reward.data import drop_unusable, ranks_from_scores, to_ranking

WORDS = ["<pad>", "</s>", "<s>", "a", "b", "c", "d", "e", "f"]


def tokenizer(bos: bool = True):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", bos_token="<s>")


def ids(text):
    return [WORDS.index(w) for w in text.split()]


def data_cfg(**kw):
    return DPODataConfig(**{"max_length": 8, "max_prompt_length": 3, **kw})


def test_prompt_is_cut_from_the_left_and_eos_is_appended_unless_present():
    tok = tokenizer()
    r = to_ranking({"prompt": "a b c d", "completions": ["e f", "e </s>"], "ranks": [1, 2]}, "x:1")
    e = D.encode(tok, r, data_cfg())
    # BOS + 4 prompt words, last 3 kept (the end is what the completions continue)
    assert e["prompt_length"] == 3 and e["input_ids"][0][:3] == ids("b c d")
    assert e["input_ids"][0][3:] == ids("e f </s>")
    assert e["input_ids"][1][3:] == ids("e </s>")  # already ends with EOS: not doubled
    assert e["ranks"] == [1, 2] and e["chosen_probability"] is None


def test_completions_are_cut_from_the_right_to_fit_max_length_and_max_completion_length():
    tok = tokenizer()
    r = to_ranking({"prompt": "a", "chosen": "b c d e f", "rejected": "c"}, "x:1")
    e = D.encode(tok, r, data_cfg(max_length=5))
    assert e["input_ids"][0] == ids("<s> a b c d")  # 5 tokens; EOS cut with the rest
    assert e["input_ids"][1] == ids("<s> a c </s>")
    e = D.encode(tok, r, data_cfg(max_completion_length=2))
    assert e["input_ids"][0] == ids("<s> a b c") and e["input_ids"][1] == ids("<s> a c </s>")


def test_empty_prompt_without_bos_is_one_line_naming_the_row():
    r = to_ranking({"prompt": "", "chosen": "a", "rejected": "b"}, "data.jsonl:7")
    with pytest.raises(UserError, match=r"^data\.jsonl:7: the prompt is empty"):
        D.encode(tokenizer(bos=False), r, data_cfg())
    assert D.encode(tokenizer(bos=True), r, data_cfg())["prompt_length"] == 1  # BOS alone is a start


def test_soft_labels_are_read_and_checked_per_row():
    row = {"prompt": "a", "chosen": "b", "rejected": "c", "chosen_probability": 0.75}
    assert to_ranking(row, "x:1")["chosen_probability"] == 0.75
    for bad in (1.5, -0.1, "0.7", True, math.nan):
        with pytest.raises(UserError, match=r"^x:3: 'chosen_probability' must be a number in \[0, 1\]"):
            to_ranking({**row, "chosen_probability": bad}, "x:3")
    with pytest.raises(UserError, match="x:4: 'chosen_probability' is a pairwise"):
        to_ranking({"prompt": "a", "completions": ["b", "c"], "ranks": [1, 2], "chosen_probability": 0.5}, "x:4")


def test_scores_are_read_checked_and_imply_the_ranks():
    row = {"prompt": "a", "completions": ["b", "c", "d"], "scores": [0.5, 2, 0.5]}
    r = to_ranking(row, "x:1")
    assert r["scores"] == [0.5, 2.0, 0.5] and r["ranks"] == [2, 1, 2]  # ranks left out: the scores' order
    assert to_ranking({**row, "ranks": [3, 1, 3]}, "x:1")["ranks"] == [3, 1, 3]  # the same order: kept
    assert to_ranking({"prompt": "a", "completions": ["b", "c"], "ranks": [1, 2]}, "x:1")["scores"] is None
    assert ranks_from_scores([1.0, 3.0, 2.0, 3.0]) == [4, 1, 3, 1]
    with pytest.raises(UserError, match=r"^x:2: 'ranks' and 'scores' disagree on completions 1 and 2 \(ranks 1, 2"):
        to_ranking({**row, "ranks": [1, 2, 3]}, "x:2")
    for bad in ([1, 2], [1, "2", 3], [1, math.inf, 0], [True, 0, 1], "1 2 3"):
        with pytest.raises(UserError, match=r"^x:3: 'scores' must be a list of 3 finite numbers, one per completion$"):
            to_ranking({**row, "scores": bad}, "x:3")
    with pytest.raises(UserError, match="^x:4: 'scores' is a K-wise"):
        to_ranking({"prompt": "a", "chosen": "b", "rejected": "c", "scores": [1, 0]}, "x:4")


def test_scored_rows_whose_completions_tie_still_teach_both_stages():
    """Equal scores are a soft label ("as good as each other"), for DPO and the reward model alike, beside rows that
    prefer something; identical texts and hard ties (ranks only, ties dropped) teach nothing; ties alone, nothing."""
    rows = [to_ranking({"prompt": "a", "completions": ["b", "c"], "scores": [1, 1]}, "x:1"),
            to_ranking({"prompt": "a", "completions": ["b", "b"], "scores": [1, 1]}, "x:2"),
            to_ranking({"prompt": "a", "completions": ["b", "c"], "ranks": [1, 1]}, "x:3"),
            to_ranking({"prompt": "a", "completions": ["b", "c"], "scores": [2, 1]}, "x:4")]  # fmt: skip
    for stage in ("dpo", "reward"):
        assert [r["where"] for r in drop_unusable(rows, "drop", "drop", "data.path", stage=stage)] == ["x:1", "x:4"]
        with pytest.raises(UserError, match="^data.path: no preference in 3 rows: every row ties"):
            drop_unusable(rows[:3], "drop", "drop", "data.path", stage=stage)


def test_collate_marks_completion_tokens_and_lays_out_slots():
    tok = tokenizer()
    rows = [
        {"prompt": "a b", "completions": ["c", "d e", "f"], "ranks": [2, 1, 3]},
        {"prompt": "a", "chosen": "b c", "rejected": "d", "chosen_probability": 0.9},
    ]
    examples = [D.encode(tok, to_ranking(r, f"x:{i}"), data_cfg()) for i, r in enumerate(rows)]
    examples[1]["ref_logps"] = [-1.5, -2.5]
    examples[0]["ref_logps"] = [-1.0, -2.0, -3.0]
    batch = D.collate(examples, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 5 and batch["slot"].tolist() == [0, 1, 2, 3, 4]
    assert batch["ranks"].tolist() == [[2, 1, 3], [1, 2, 1]] and batch["valid"].tolist()[1] == [True, True, False]
    for row, (e, k) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        n, start = len(examples[e]["input_ids"][k]), examples[e]["prompt_length"]
        want = [0] * start + [1] * (n - start) + [0] * (batch["input_ids"].shape[1] - n)
        assert batch["completion_mask"][row].tolist() == want
    assert batch["probability"].tolist() == [1.0, 0.9]
    assert batch["ref_logps"].tolist() == [[-1.0, -2.0, -3.0], [-1.5, -2.5, 0.0]]
    del examples[1]["ref_logps"]
    assert "ref_logps" not in D.collate(examples, tok.pad_token_id)  # all or none: computed on the fly


def test_collate_carries_scores_and_batch_loss_uses_them_where_a_row_has_them():
    tok = tokenizer()
    rows = [{"prompt": "a b", "completions": ["c", "d e", "f"], "scores": [0.2, 1.5, -1.0]},
            {"prompt": "a", "completions": ["b c", "d"], "ranks": [1, 2]}]  # fmt: skip
    examples = [D.encode(tok, to_ranking(r, f"x:{i}"), data_cfg()) for i, r in enumerate(rows)]
    batch = D.collate(examples, tok.pad_token_id)
    assert batch["scored"].tolist() == [True, False] and batch["scores"].tolist() == [[0.2, 1.5, -1.0], [0, 0, 0]]
    assert "scores" not in D.collate(examples[1:], tok.pad_token_id)
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.2, -1.0, -1.1], [-1.0, -1.0, 0.0]], dtype=torch.float64)
    for loss_type, soft in (
        ("plackett_luce", losses.plackett_luce_soft_loss),
        ("sigmoid", losses.ranking_pair_soft_loss),
    ):
        c = DPOLossConfig(type=loss_type, beta=0.5)
        out = batch_loss(c, logps, ref, batch)
        want_soft = soft(logps[:1], ref[:1], batch["scores"][:1], batch["valid"][:1], beta=0.5).losses
        want_hard = batch_loss(c, logps[1:, :2], ref[1:, :2], D.collate(examples[1:], tok.pad_token_id)).losses
        torch.testing.assert_close(out.losses, torch.cat([want_soft, want_hard]))


def test_scored_rankings_too_long_to_sum_over_name_the_row():
    long = to_ranking({"prompt": "a", "completions": [f"b{i}" for i in range(13)], "scores": list(range(13))}, "x:6")
    with pytest.raises(UserError, match="^x:6: 13 scored completions; loss.type=plackett_luce sums a soft label"):
        D.check_plackett_luce(long, "drop")


def test_plackett_luce_tie_limits_name_the_row():
    big_tie = to_ranking({"prompt": "a", "completions": ["b"] * 14, "ranks": [1] + [2] * 13}, "x:5")
    with pytest.raises(UserError, match="^x:5: 13 tied completions; loss.type=plackett_luce with ties=drop"):
        D.check_plackett_luce(big_tie, "drop")
    with pytest.raises(UserError, match="^x:5: 14 completions; .* ties=davidson handles at most 12"):
        D.check_plackett_luce(big_tie, "davidson")
    D.check_plackett_luce({**big_tie, "ranks": list(range(1, 15))}, "drop")  # no tie: any K


def test_informative_prompts():
    assert D.is_informative([1, 2]) and D.is_informative([1, 1, 3])
    assert not D.is_informative([1, 1]) and not D.is_informative([2, 2, 2])
    assert D.is_informative([1, 1], "davidson")


def test_strict_pairs_count_the_comparisons_a_ranking_holds():
    def naive(ranks):
        return len([(i, j) for i in range(len(ranks)) for j in range(len(ranks)) if i < j and ranks[i] != ranks[j]])

    for ranks in ([1, 2], [2, 1], [1, 2, 3, 4], [1, 1, 3], [2, 2, 2], [1, 3, 3, 2, 5, 5]):
        assert D.strict_pairs(ranks) == naive(ranks), ranks
    assert D.strict_pairs([1, 2, 3, 4]) == 6 and D.strict_pairs([1, 1, 3]) == 2
    # a scored ranking compares every pair: equal scores are a label too
    assert D.comparisons({"ranks": [1, 1, 3]}) == 2 and D.comparisons({"ranks": [1, 1, 3], "scores": [2, 2, 0]}) == 3


def test_a_step_holds_at_least_min_pairs_per_step_comparisons_over_every_process():
    t = DPOTrainConfig(per_device_batch_size=4, min_pairs_per_step=24)
    assert rankings_per_device(t, 6.0, world=1) == 4  # rankings of 4: 24 comparisons at the configured batch
    assert rankings_per_device(t, 10.0, world=1) == 4  # never fewer than configured
    assert rankings_per_device(t, 1.0, world=1) == 24  # pairs: 24 a step
    assert rankings_per_device(t, 3.0, world=1) == 8
    assert rankings_per_device(t, 1.0, world=2) == 12  # the same 24 a step over two processes
    accumulating = DPOTrainConfig(per_device_batch_size=2, gradient_accumulation_steps=3, min_pairs_per_step=24)
    assert rankings_per_device(accumulating, 1.0, world=2) == 4  # 4 x 3 micro-batches x 2 processes
    for world, accumulation in ((1, 1), (2, 1), (2, 3), (4, 2)):
        c = DPOTrainConfig(per_device_batch_size=1, gradient_accumulation_steps=accumulation, min_pairs_per_step=24)
        for pairs in (1.0, 1.5, 3.0, 6.0):
            per_step = rankings_per_device(c, pairs, world) * world * accumulation * pairs
            assert per_step >= 24 and (per_step - world * accumulation * pairs) < 24, (world, accumulation, pairs)
    assert rankings_per_device(DPOTrainConfig(per_device_batch_size=4, min_pairs_per_step=0), 1.0, world=1) == 4


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "plackett_luce"])
def test_soft_labelled_pairs_equal_dpo_loss_with_chosen_probability(loss_type):
    g = torch.Generator().manual_seed(0)
    logps, ref = (
        torch.randn(5, 2, generator=g, dtype=torch.float64),
        torch.randn(5, 2, generator=g, dtype=torch.float64),
    )
    p = torch.tensor([1.0, 0.9, 0.5, 0.2, 0.0], dtype=torch.float64)
    batch = {"ranks": torch.tensor([[1, 2]] * 5), "valid": torch.ones(5, 2, dtype=torch.bool), "probability": p}
    got = batch_loss(DPOLossConfig(type=loss_type, beta=0.3), logps, ref, batch)
    # Plackett-Luce at K = 2 is sigmoid DPO, soft labels included
    want = losses.dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], 0.3,
                           "ipo" if loss_type == "ipo" else "sigmoid", p)  # fmt: skip
    assert torch.allclose(got.losses, want.losses, rtol=1e-12, atol=1e-12)
    assert got.informative.all()


@pytest.mark.parametrize("loss_type", ["sigmoid", "plackett_luce"])
def test_label_smoothing_takes_a_hard_label_as_right_with_1_minus_eps_and_leaves_soft_labels(loss_type):
    g = torch.Generator().manual_seed(1)
    logps, ref = (torch.randn(4, 2, generator=g, dtype=torch.float64) for _ in range(2))
    p = torch.tensor([1.0, 1.0, 0.7, 1.0], dtype=torch.float64)
    hard = torch.tensor([True, True, False, False])  # the last: a soft label of exactly 1, kept
    batch = {"ranks": torch.tensor([[1, 2]] * 4), "valid": torch.ones(4, 2, dtype=torch.bool), "probability": p}
    got = batch_loss(DPOLossConfig(type=loss_type, beta=0.3, label_smoothing=0.1), logps, ref, {**batch, "hard": hard})
    want = losses.dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], 0.3, "sigmoid",
                           torch.tensor([0.9, 0.9, 0.7, 1.0], dtype=torch.float64))  # fmt: skip
    assert torch.allclose(got.losses, want.losses, rtol=1e-12, atol=1e-12)  # cDPO at K = 2, exactly
    # a ranking of 3: (1 - eps) of its loss and eps of its reverse's
    logps3, ref3 = (torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(2))
    ranks = torch.tensor([[1, 2, 3], [2, 3, 1]])
    batch3 = {"ranks": ranks, "valid": torch.ones(2, 3, dtype=torch.bool), "probability": torch.ones(2).double()}
    c = DPOLossConfig(type=loss_type, beta=0.3, label_smoothing=0.2)
    got = batch_loss(c, logps3, ref3, {**batch3, "hard": torch.tensor([True, True])}).losses
    plain = batch_loss(DPOLossConfig(type=loss_type, beta=0.3), logps3, ref3, batch3).losses
    flipped = batch_loss(DPOLossConfig(type=loss_type, beta=0.3), logps3, ref3, {**batch3, "ranks": 4 - ranks}).losses
    assert torch.allclose(got, 0.8 * plain + 0.2 * flipped, rtol=1e-12, atol=1e-12)


def test_metrics_are_means_per_comparison_and_per_informative_prompt():
    sums = {"loss": 3.0, "prompts": 2.0, "comparisons": 4.0, **{name: 2.0 for name in losses.METRICS}}
    out = metrics_from_sums(sums, "eval")
    assert out["eval/loss"] == 1.5 and out["eval/rewards/accuracies"] == 0.5 and out["eval/logps/chosen"] == 0.5
    assert math.isnan(metrics_from_sums({**sums, "prompts": 0.0, "comparisons": 0.0}, "eval")["eval/loss"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.ties=davidson", "'loss.ties=davidson' needs loss.type=plackett_luce"),
        ("loss.beta=0", "'loss.beta' must be > 0"),
        ("adapter.method=full", "'adapter.method' must be lora or ia3"),
        ("data.max_prompt_length=600", "'data.max_length' \\(512\\) must exceed"),
        ("data.k=1", "'data.k' must be >= 2"),
    ],
)
def test_config_mistakes_name_the_key(override, message):
    extra = ["loss.type=sigmoid"] if "davidson" in override else []
    with pytest.raises(ConfigError, match=message):
        load_config(
            DPOConfig,
            overrides=["output_dir=x", "model.name_or_path=m", "data.path=builtin:reviews-rankings", override, *extra],
        )


@pytest.mark.parametrize(
    "beta, pivot, expected",
    [(0.1, 0.3, 2e-3), (0.3, 0.3, 2e-3), (0.6, 0.3, 1e-3), (1.0, 0.3, 6e-4), (1.0, None, 2e-3)],
)
def test_learning_rate_falls_with_beta_above_the_pivot_and_stays_below(beta, pivot, expected):
    cfg = load_config(
        DPOConfig,
        overrides=["output_dir=x", "model.name_or_path=m", "data.path=builtin:reviews-rankings",
                   "train.learning_rate=2e-3", f"loss.beta={beta}", f"train.lr_from_beta={pivot or 'null'}"],
    )  # fmt: skip
    assert learning_rate(cfg) == pytest.approx(expected, rel=1e-12)
