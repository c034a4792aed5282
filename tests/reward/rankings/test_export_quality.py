"""The export keeps gold answers and campaigns out of training data (campaigns when asked), estimates each
annotator's reliability from every ranking, and writes annotators.json and a per-row annotator_weight."""

from __future__ import annotations

import json

import pytest

from reward.rankings.config import ExportConfig
from reward.rankings.export import export
from reward.rankings.simulate import SimAnnotator, rank_in_store
from tests.reward.rankings.conftest import add_tasks
from tests.reward.rankings.store.test_quality import by_text_number, campaign_tasks, gold_tasks


@pytest.mark.slow  # a store ranked by four people, three exports and the reliability fit: seconds
def test_gold_and_campaigns_stay_out_and_every_row_carries_its_annotators_weight(store, tmp_path):
    add_tasks(store, 30, k=3, prefix="train")
    store.create_campaign("final", campaign_tasks(5), annotators_per_task=3, meta={})
    store.add_gold_tasks(gold_tasks(6))
    store.set_gold_policy(rate=0.4)
    people = [
        SimAnnotator("c1", 0.3),
        SimAnnotator("c2", 0.3),
        SimAnnotator("c3", 0.3),
        SimAnnotator("x", careless=True),
    ]
    rank_in_store(store, people, by_text_number, seed=4)
    rows = store.rankings()
    n_gold, n_campaign = sum(r["gold"] for r in rows), sum(r["campaign"] == "final" for r in rows)
    assert n_gold >= 8 and n_campaign == 15

    out = tmp_path / "export"
    manifest = export(ExportConfig(store=store.url, output_dir=str(out), test_size=0, formats=["jsonl"]))
    assert manifest["counts"]["gold_rankings_left_out"] == n_gold
    assert manifest["counts"]["campaign_rankings_left_out"] == n_campaign
    kwise = read(out / "kwise_train.jsonl")
    assert len(kwise) == 30 and all("train" in row["prompt"] for row in kwise)
    people_file = json.loads((out / "annotators.json").read_text())
    weight = {name: a["weight"] for name, a in people_file["annotators"].items()}
    assert min(weight, key=weight.get) == "x" and weight["x"] < 0.3
    assert {(row["annotator"], row["annotator_weight"]) for row in kwise} <= set(weight.items())
    assert {row["annotator_weight"] for row in read(out / "pairwise_train.jsonl")} <= set(weight.values())

    with_campaign = ExportConfig(
        store=store.url, output_dir=str(tmp_path / "with"), test_size=0, campaigns=["final"], formats=["jsonl"]
    )
    asked = export(with_campaign)
    assert asked["counts"]["kwise_rows"] == 30 + n_campaign and "campaign_rankings_left_out" not in asked["counts"]
    plain = ExportConfig(
        store=store.url, output_dir=str(tmp_path / "plain"), annotator_weights=False, test_size=0, formats=["jsonl"]
    )
    assert "annotators" not in export(plain)
    assert all("annotator_weight" not in row for row in read(tmp_path / "plain" / "kwise_train.jsonl"))


def read(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_build_rows_leaves_gold_and_unasked_campaigns_out_and_weighs_rows():
    from reward.rankings.export import build_rows

    def ranking(i, annotator, **kind):
        return {
            "ranking_id": i,
            "task_id": i,
            "prompt_id": i,
            "prompt": f"p{i}",
            "is_chat": False,
            "completions": ["a", "b"],
            "models": ["", ""],
            "seeds": [None, None],
            "ranks": [1, 2],
            "order_shown": [0, 1],
            "annotator": annotator,
            "seconds": 1.0,
            "task_meta": {},
            "flags": [],
            "flag_confirmed": False,
            "campaign": None,
            "gold": False,
            **kind,
        }

    rows = [ranking(1, "ann"), ranking(2, "x"), ranking(3, "ann", gold=True), ranking(4, "ann", campaign="final")]
    kwise, pairwise, counts = build_rows(rows, ExportConfig(store="s", output_dir="o"), {"ann": 1.5, "x": 0.0})
    assert [(r["task_id"], r["annotator_weight"]) for r in kwise] == [(1, 1.5), (2, 0.0)]
    assert [p["annotator_weight"] for p in pairwise] == [1.5, 0.0]
    assert counts["gold_rankings_left_out"] == 1 and counts["campaign_rankings_left_out"] == 1
    asked = build_rows(rows, ExportConfig(store="s", output_dir="o", campaigns=["final"]), {})[0]
    assert [r["task_id"] for r in asked] == [1, 2, 4] and asked[2]["annotator_weight"] == 1.0
