"""Active ranking in `rlhf sample` (reward/rankings/active.py): which prompts and which K of M go to people."""

from __future__ import annotations

import logging

import pytest
import torch

from alignment.common.errors import UserError
from alignment.config.loader import load_config
from reward import acquisition as A
from reward import uncertainty as U
from reward.rankings import active
from reward.rankings.sampling import SampleConfig, sample, write_chosen
from reward.rankings.store import open_store


def posterior(d: int = 5, seed: int = 0) -> U.Laplace:
    g = torch.Generator().manual_seed(seed)
    return U.laplace(torch.randn(20, d, generator=g), torch.randint(0, 20, (30, 2), generator=g),
                     torch.randn(d, generator=g))  # fmt: skip


def test_valid_candidates_drop_empty_and_repeated_texts():
    assert active.valid_candidates(["a", " ", "b", "a", "", "c"]) == [True, False, True, False, False, True]


def test_choose_takes_the_rule_best_then_a_random_share_of_the_rest():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(10, 4, 5, generator=g)
    valid = torch.ones(10, 4, dtype=torch.bool)
    post = posterior()
    acq = active.AcquisitionConfig(method="uncertainty", candidates=4, budget=5, random_share=0.4, reward="r")
    picks = active.choose(acq, 2, valid, phi, post, seed=3)
    rule = A.select("uncertainty", post, phi, 2)
    best = A.serving_order(rule.scores)[:3].tolist()
    assert [c.row for c in picks if c.pick == "rule"] == best  # the rule's 3 best, in serving order
    drawn = [c for c in picks if c.pick == "random"]
    assert len(drawn) == 2 and not {c.row for c in drawn} & set(best)
    assert all(c.score == pytest.approx(float(rule.scores[c.row])) for c in picks)  # its acquisition score
    assert [c.score for c in picks] == sorted((c.score for c in picks), reverse=True)
    for c in picks:
        if c.pick == "rule":
            assert c.chosen == rule.chosen[c.row].tolist()
    assert picks == active.choose(acq, 2, valid, phi, post, seed=3)  # deterministic for a seed
    every = active.choose(active.AcquisitionConfig(method="dopt", reward="r"), 2, valid, phi, post, seed=3)
    assert sorted(c.row for c in every) == list(range(10))  # no budget: every prompt


def test_write_chosen_stores_k_valid_candidates_with_priorities(tmp_path):
    """The main process's step of `rlhf sample` with acquisition: the random rule needs no reward model."""
    cfg = load_config(SampleConfig, None, [f"output_dir={tmp_path}", "model.name_or_path=builtin:tiny-llama", "prompts=builtin:reviews-prompts", "k=2", "acquisition.method=random",
                                           "acquisition.candidates=4", "acquisition.budget=3", "seed=5"])  # fmt: skip
    gathered = [
        (f"prompt {i}", texts, 100 + i, 0)
        for i, texts in enumerate(
            [
                ["a", "b", "c", "d"],
                ["x", "x", "", "y"],
                ["same"] * 4,
                ["p", "q", "r", "s"],
                ["1", "2", "3", "4"],
                ["u", "", "", ""],
            ]
        )  # fmt: skip
    ]
    added = write_chosen(cfg, gathered, "model", None, logging.getLogger("test"))
    assert len(added) == 3
    store = open_store(str(tmp_path / "rankings.db"))
    users = [store.add_user(f"u{i}", password="pw12") for i in range(3)]
    views = [store.next_task(u, 1, 60) for u in users]
    priorities = [v.meta["acquisition"]["score"] for v in views]
    assert priorities == sorted(priorities, reverse=True)  # served by priority
    for v in views:
        texts = sorted(c["text"] for c in v.completions)
        prompt = dict((p, t) for p, t, _, _ in gathered)[v.prompt]
        assert len(set(texts)) == 2 and all(t.strip() for t in texts) and set(texts) <= set(prompt)
        assert v.prompt not in ("prompt 2", "prompt 5")  # fewer than K distinct non-empty: skipped
    store.close()


def test_missing_reward_is_one_line_naming_the_key(tmp_path):
    with pytest.raises(UserError, match="'acquisition.reward' is required for acquisition.method=dopt"):
        load_config(
            SampleConfig,
            None,
            [
                f"output_dir={tmp_path}",
                "model.name_or_path=builtin:tiny-llama",
                "prompts=builtin:reviews-prompts",
                "acquisition.method=dopt",
            ],
        )
    with pytest.raises(UserError, match="'acquisition.candidates' must be >= k = 4"):
        load_config(
            SampleConfig,
            None,
            [
                f"output_dir={tmp_path}",
                "model.name_or_path=builtin:tiny-llama",
                "prompts=builtin:reviews-prompts",
                "acquisition.method=random",
                "acquisition.candidates=3",
            ],
        )
    cfg = load_config(SampleConfig, None, [f"output_dir={tmp_path}", "model.name_or_path=builtin:tiny-llama", "prompts=builtin:reviews-prompts", "acquisition.method=uncertainty",
                                           f"acquisition.reward={tmp_path / 'nowhere'}"])  # fmt: skip
    with pytest.raises(UserError, match="acquisition.reward: '.*nowhere' does not exist"):
        sample(cfg)
    (tmp_path / "reward").mkdir()
    cfg.acquisition.reward = str(tmp_path / "reward")
    with pytest.raises(UserError, match="has no uncertainty.safetensors"):
        sample(cfg)
    assert not (tmp_path / "rankings.db").exists()  # nothing sampled, nothing written
