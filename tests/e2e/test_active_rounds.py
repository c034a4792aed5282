"""`rlhf pipeline rounds=3 acquisition.method=dopt to_stage=reward`: active ranking in rounds, end to end.

Round 1 has no reward model yet and chooses at random (same M, same budget); rounds 2 and 3 sample M
candidates from the SFT model and let the previous round's reward model choose what the scripted
annotators rank, and every round's reward model is trained on every ranking so far.
"""

import json
import sqlite3

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

TINY = [
    "sft=[train.max_steps=30,data.limit=320,save_merged=true]",
    "sample=[repeats=1,k=3,max_new_tokens=12]",
    "reward=[train.epochs=1,train.log_steps=5,data.max_length=48]",
    "annotators.count=1",
    "acquisition.candidates=5",
    "acquisition.budget=6",
]


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize(
    "features",
    ["head", pytest.param("tokens", marks=pytest.mark.extended)],  # tokens: its fit is unit-tested
)
def test_three_rounds_of_active_ranking(tmp_path, features):
    """features=tokens: the surrogate is fitted on the previous round's export (a dataset folder) at sampling."""
    out = tmp_path / "run"
    r = run_cli("pipeline", "configs/pipeline.yaml", f"output_dir={out}", "rounds=3", "to_stage=reward",
                "acquisition.method=dopt", f"acquisition.features={features}", *TINY, timeout=1800)  # fmt: skip
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert not (out / "ppo").exists() and "ppo: running" not in r.stdout  # to_stage=reward: no PPO
    rounds = [out, out / "round-2", out / "round-3"]
    with sqlite3.connect(out / "rankings.db") as db:
        rows = db.execute(
            "select json_extract(t.meta, '$.tag'), t.priority, json_extract(t.meta, '$.acquisition.score'), "
            "json_extract(t.meta, '$.acquisition.method'), (select count(*) from rankings r where r.task_id = t.id) "
            "from tasks t"
        ).fetchall()
    by_round = {f"round-{i}": [row for row in rows if row[0] == f"round-{i}"] for i in (1, 2, 3)}
    for i, folder in enumerate(rounds, start=1):
        sample = manifest(folder / "sample")
        tasks = by_round[f"round-{i}"]
        assert 0 < len(tasks) <= 6 and sample["acquisition"]["candidates"] == 5
        # Each task carries its acquisition score as its priority, and was ranked.
        assert all(priority == pytest.approx(score) and n == 1 for _, priority, score, _, n in tasks)
        if i == 1:  # no reward model yet: random, with the same M and budget
            assert sample["acquisition"]["method"] == "random" and sample["inputs"]["reward"] is None
        else:  # the previous round's reward model chose
            assert sample["acquisition"]["method"] == "dopt" and sample["acquisition"]["features"] == features
            assert sample["inputs"]["reward"] == str(rounds[i - 2] / "reward")
            assert {method for *_, method, _ in tasks} == {"dopt"}
            assert len({priority for _, priority, *_ in tasks}) > 1
        # The reward model of round i trained (and held out) on every ranking of rounds 1..i.
        so_far = sum(len(by_round[f"round-{j}"]) for j in range(1, i + 1))
        reward = manifest(folder / "reward")
        assert reward["data"]["train_rankings"] + reward["data"]["eval_rankings"] == so_far
        assert reward["outputs"]["uncertainty"] == "uncertainty.safetensors"
        assert (folder / "reward" / "uncertainty.safetensors").is_file()
