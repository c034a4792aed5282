"""data.annotator_weights: the K-wise loss weighs each prompt by its annotator's weight (checked against a loop over
prompts), rows carry the export's `annotator_weight`, and `estimated` scales them to mean 1 or names the row
that has none."""

from __future__ import annotations

import pytest
import torch

from alignment.common.errors import UserError
from reward import data as rdata
from reward import losses


def test_weighted_kwise_loss_is_the_weighted_mean_of_per_prompt_losses():
    torch.manual_seed(0)
    scores = torch.randn(4, 3)
    ranks = torch.tensor([[1, 2, 3], [2, 1, 3], [1, 1, 1], [3, 1, 2]])  # prompt 2 has no comparison
    weights = torch.tensor([2.0, 0.0, 5.0, 0.5])
    got = losses.kwise_loss(scores, ranks, weights=weights)
    per_prompt = [losses.kwise_loss(scores[b : b + 1], ranks[b : b + 1]) for b in (0, 1, 3)]
    want = (2.0 * per_prompt[0] + 0.0 * per_prompt[1] + 0.5 * per_prompt[2]) / 3
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        losses.kwise_loss(scores, ranks, weights=torch.ones(4)), losses.kwise_loss(scores, ranks)
    )


def rows(weights):
    base = {"prompt": "p", "completions": ["a", "b"], "ranks": [1, 2]}
    return [{**base, **({} if w is None else {"annotator_weight": w})} for w in weights]


def test_estimated_weights_are_scaled_to_mean_one_and_a_missing_one_is_named():
    rankings = [rdata.to_ranking(r, f"f.jsonl:{i + 1}") for i, r in enumerate(rows([0.0, 1.0, 2.0]))]
    assert [r["weight"] for r in rdata.apply_annotator_weights(rankings, "estimated")] == [0.0, 1.0, 2.0]
    assert [r["weight"] for r in rdata.apply_annotator_weights(rankings, "equal")] == [1.0, 1.0, 1.0]
    half = [rdata.to_ranking(r, "f") for r in rows([0.5, 0.5])]
    assert [r["weight"] for r in rdata.apply_annotator_weights(half, "estimated")] == [1.0, 1.0]
    mixed = [rdata.to_ranking(r, f"f.jsonl:{i + 1}") for i, r in enumerate(rows([1.0, None]))]
    with pytest.raises(UserError, match="f.jsonl:2: no 'annotator_weight' column"):
        rdata.apply_annotator_weights(mixed, "estimated")
    with pytest.raises(UserError, match="every 'annotator_weight' is 0"):
        rdata.apply_annotator_weights([rdata.to_ranking(r, "f") for r in rows([0, 0])], "estimated")
    with pytest.raises(UserError, match="f:1: 'annotator_weight' must be a finite number >= 0"):
        rdata.to_ranking(rows([-1.0])[0], "f:1")


def test_collate_carries_each_examples_weight():
    examples = [
        {"input_ids": [[1, 2], [1, 3]], "lengths": [1, 1], "ranks": [1, 2], "margin": None, "weight": w}
        for w in (0.25, 3.0)
    ]
    assert rdata.collate(examples, 0)["loss_weights"].tolist() == [0.25, 3.0]
