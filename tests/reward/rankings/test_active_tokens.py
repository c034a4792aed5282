"""`acquisition.features=tokens`: the bag-of-tokens surrogate, from a reward folder's tokenizer and training rankings."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from alignment.common.errors import UserError
from alignment.config.loader import load_config
from reward import acquisition as A
from reward import uncertainty as U
from reward.rankings import active
from reward.rankings.sampling import SampleConfig

ROWS = [
    {"prompt": "Review of the cafe:", "completions": [" the food was great.", " the food was awful.", " ok."],
     "ranks": [1, 3, 2]},
    {"prompt": "Review of the gym:", "chosen": " the staff were friendly.", "rejected": " the staff were rude."},
]  # fmt: skip


@pytest.fixture
def folder(builtin_model, tmp_path):
    """What the surrogate reads of a reward run: its tokenizer and config.yaml (data.path), no model weights."""
    AutoTokenizer.from_pretrained(builtin_model).save_pretrained(tmp_path / "reward")
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "reward" / "config.yaml").write_text(yaml.safe_dump({"data": {"path": str(data)}}))
    return tmp_path / "reward"


def test_token_surrogate_fits_the_training_rankings_token_counts(folder):
    acq = active.AcquisitionConfig(method="dopt", reward=str(folder), features="tokens", token_dim=64)
    post = active.load_posterior(acq)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [
        " the food was great.",
        " the food was awful.",
        " ok.",
        " the staff were friendly.",
        " the staff were rude.",
    ]
    phi = U.token_counts([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], 64).double()
    pairs = torch.tensor([[0, 1], [0, 2], [2, 1], [3, 4]])  # ranks 1 > 2 > 3, and chosen > rejected
    expected = U.fit_surrogate(phi, pairs, 1.0)
    torch.testing.assert_close(post.weight, expected.weight)
    torch.testing.assert_close(post.cholesky, expected.cholesky)
    # The winners' own tokens get positive weight: "great" over "awful", "friendly" over "rude".
    assert float(phi[0] @ post.weight) > float(phi[1] @ post.weight)
    assert float(phi[3] @ post.weight) > float(phi[4] @ post.weight)
    # Candidate features are the same counts, per row; any rule runs on them.
    rows = [("p", texts[:3]), ("q", [texts[3], texts[4], " great."])]
    feats = active.features(acq, rows, "cpu")
    torch.testing.assert_close(feats[0], phi[:3].float())
    picks = active.choose(acq, 2, torch.ones(2, 3, dtype=torch.bool), torch.stack(feats), post, seed=0)
    assert len(picks) == 2 and all(len(c.chosen) == 2 for c in picks)
    assert picks == active.choose(acq, 2, torch.ones(2, 3, dtype=torch.bool), torch.stack(feats), post, seed=0)
    sel = A.select("dopt", post, torch.stack(feats), 2)
    assert [c.row for c in picks] == A.serving_order(sel.scores).tolist()


def test_token_surrogate_bad_inputs_are_one_line(folder, tmp_path):
    acq = active.AcquisitionConfig(method="uncertainty", reward=str(folder), features="tokens")
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"path": str(tmp_path / "gone.jsonl")}}))
    with pytest.raises(UserError, match=r"features=tokens: .*gone.jsonl' does not exist"):
        active.load_posterior(acq)
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": 1}))
    with pytest.raises(UserError, match="names no data.path"):
        active.load_posterior(acq)
    (folder / "config.yaml").unlink()
    with pytest.raises(UserError, match="cannot read .*config.yaml"):
        active.load_posterior(acq)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("acquisition.token_dim=0", "'acquisition.token_dim' must be in [1, 8192]"),
        ("acquisition.token_dim=9000", "'acquisition.token_dim' must be in [1, 8192]"),
        ("acquisition.prior_precision=0", "'acquisition.prior_precision' must be > 0"),
        ("acquisition.features=words", "acquisition.features"),
    ],
)
def test_new_keys_are_validated(tmp_path, override, message):
    base = [f"output_dir={tmp_path}", "model.name_or_path=builtin:tiny-llama", "prompts=builtin:reviews-prompts",
            "acquisition.method=random"]  # fmt: skip
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(SampleConfig, None, [*base, override])


def test_pipeline_rounds_pass_the_surrogate_keys_to_sample():
    from alignment.pipeline import acquisition_args

    acq = active.AcquisitionConfig(method="dopt", features="tokens", token_dim=256, prior_precision=2.0)
    args = acquisition_args(acq, "runs/x/reward")
    assert {"acquisition.method=dopt", "acquisition.reward=runs/x/reward", "acquisition.features=tokens",
            "acquisition.token_dim=256", "acquisition.prior_precision=2.0"} <= set(args)  # fmt: skip
    assert "acquisition.method=random" in acquisition_args(acq, None)  # round 1: no reward model yet
