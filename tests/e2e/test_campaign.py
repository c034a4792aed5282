"""People as the judge, end to end on tiny models: `rlhf eval` with a best-of-4 policy, a blind campaign from its
folder ranked by scripted annotators (one careless) through the real server with gold tasks mixed in, the report
beside eval.json, the commands a user runs (`rlhf rank campaign report`, `rlhf rank export`, `rlhf bon`)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

GOLD = "alignment.assets.gold:gold_reward"


def ok(*args: str) -> str:
    r = run_cli(*args)
    assert r.returncode == 0, f"{args[0]} exited {r.returncode}:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An SFT policy, a reward model on the builtin rankings, and `rlhf eval` of sft, bon4 and the base."""
    run = tmp_path_factory.mktemp("campaign")
    ok("sft", "configs/sft.yaml", f"output_dir={run / 'sft'}", "train.max_steps=20", "checkpoint.save_steps=0")
    ok(
        "reward",
        "configs/reward.yaml",
        f"output_dir={run / 'reward'}",
        f"model.name_or_path={run / 'sft'}",
        "data.path=builtin:reviews-rankings",
        "data.eval_path=null",
        "data.limit=160",
        "train.epochs=1",
        "data.reference_size=8",
        "checkpoint.save_steps=0",
        "uncertainty.enabled=false",
    )
    policies = f"policies={{sft: {run / 'sft'}, bon4: 'bon:4:{run / 'sft'}', base: builtin:tiny-llama}}"
    ok(
        "eval",
        "configs/eval.yaml",
        f"output_dir={run / 'eval'}",
        policies,
        f"reference={run / 'sft'}",
        f"reward_model={run / 'reward'}",
        f"judge={GOLD}",
        "generation.num_samples=6",
        "generation.max_new_tokens=16",
    )
    return run


def test_best_of_n_in_eval_picks_the_reward_models_best(run_dir):
    result = json.loads((run_dir / "eval" / "eval.json").read_text())
    sft, bon = result["policies"]["sft"], result["policies"]["bon4"]
    assert bon["samples"] == sft["samples"] == 6 * 6
    assert bon["kl"] == pytest.approx(math.log(4) - 3 / 4)  # the best-of-N bound, not a sampled estimate
    assert bon["reward"] > sft["reward"]  # the best of 4 by the reward model scores higher by it


def test_a_campaign_ranked_by_scripted_annotators_reports_beside_eval(run_dir):
    from alignment.human_eval import run_campaign

    store = str(run_dir / "rankings.db")
    report = run_campaign(str(run_dir / "eval"), store, draws=4, gold=6, gold_rate=0.3, bootstrap=200, show=print)
    assert set(report["policies"]) == {"sft", "bon4", "base"} and report["tasks"] == 6 * 4
    assert report["rankings"] == 6 * 4 * 3  # N = 3 each, whatever the store's N
    for p, r in report["ratings"].items():
        assert r["low"] <= r["rating"] <= r["high"], p
    assert {"reward", "judge"} <= set(report["automatic"]["bon4"]) and "judge" in report["order_agreement"]
    people = report["annotators"]
    assert min(people, key=lambda a: people[a]["reliability"] or 0) == "careless"
    assert people["careless"]["gold_answers"] >= 1 and len(report["position"]) == 3
    saved = json.loads((run_dir / "eval" / "eval_human.json").read_text())
    assert saved["order"] == report["order"] and (run_dir / "eval" / "campaign.png").stat().st_size > 10_000

    # The command a user runs gives the same report; the training export leaves the campaign and gold out.
    out = ok("rank", "campaign", "report", f"store={store}", "name=final", "bootstrap=200", "unit=task")
    assert "people's order" in out and "judge's order" in out and "careless" in out
    refused = run_cli("rank", "export", f"store={store}", f"output_dir={run_dir / 'export'}")
    assert refused.returncode == 2 and "'campaign_rankings_left_out': 72" in refused.stderr  # nothing to train on
    ok("rank", "export", f"store={store}", f"output_dir={run_dir / 'export'}", "campaigns=[final]")
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["counts"]["kwise_rows"] == report["rankings"] and manifest["counts"]["gold_rankings_left_out"] >= 1


def test_rlhf_bon_writes_sft_rows_from_the_best_of_n(run_dir):
    out = run_dir / "bon"
    stdout = ok(
        "bon",
        f"policy={run_dir / 'sft'}",
        f"reward_model={run_dir / 'reward'}",
        "n=4",
        f"output_dir={out}",
        "data.limit=5",
        "generation.max_new_tokens=12",
    )
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(set(r) == {"prompt", "completion", "reward", "n"} for r in rows)
    assert "rlhf sft" in stdout and json.loads((out / "manifest.json").read_text())["metrics"]["rows"] == 5
