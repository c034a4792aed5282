"""`rlhf rank import` of gold tasks: the known answer from `ranks` (pairwise: chosen first) goes to gold_answers
only, the tasks are gold (mixed in at the gold rate, never exported), and a bad gold row imports nothing."""

from __future__ import annotations

import pytest

from alignment.commands.rank import main
from alignment.common.errors import UserError
from reward.rankings.store import open_store
from tests.conftest import write_jsonl


def test_gold_rows_keep_their_answer_apart_and_the_rest_import_as_usual(tmp_path, capsys):
    db = str(tmp_path / "rankings.db")
    rows = [
        {"prompt": "Best fruit?", "completions": ["apple", "mud", "pear"], "ranks": [1, 3, 2], "gold": True},
        {"prompt": "Say hi.", "chosen": "hello!", "rejected": "go away", "gold": True},
        {"prompt": "Plain task.", "completions": ["a", "b"]},
        {"prompt": "Ranked before.", "completions": ["x", "y"], "ranks": [2, 1]},  # not gold: an earlier ranking
    ]
    assert main(["import", write_jsonl(tmp_path / "t.jsonl", rows), f"store={db}"]) == 0
    assert "4 new tasks" in capsys.readouterr().out
    store = open_store(db)
    gold = store.gold_answers()
    assert sorted(gold.values()) == [[1, 2], [1, 3, 2]] and store.overview(1)["gold_tasks"] == 2
    views = [store.next_task(store.add_user(n, password="pw12"), 1, 60) for n in ("ann", "bob")]
    for v in views:  # with no gold rate set, the queue serves the two ordinary tasks
        assert v.task_id not in gold and "source_ranks" not in str(v.as_json())
    with store.engine.connect() as c:
        from sqlalchemy import text

        metas = [m for (m,) in c.execute(text("SELECT meta FROM tasks WHERE is_gold"))]
    assert all("source_ranks" not in m for m in metas)  # the answer is in gold_answers alone
    store.close()


def test_gold_true_makes_every_row_gold_and_a_bad_answer_imports_nothing(tmp_path):
    db = str(tmp_path / "rankings.db")
    good = {"prompt": "p", "completions": ["a", "b", "c"], "ranks": [2, 1, 3]}
    bad = {"prompt": "q", "completions": ["a", "b"], "ranks": [1, 1]}
    with pytest.raises(UserError, match=r"t.jsonl:2: the known answer ties every completion"):
        main(["import", write_jsonl(tmp_path / "t.jsonl", [good, bad]), f"store={db}", "gold=true"])
    with pytest.raises(UserError, match=r"u.jsonl:1: a gold row needs its known answer"):
        main(
            [
                "import",
                write_jsonl(tmp_path / "u.jsonl", [{"prompt": "p", "completions": ["a", "b"]}]),
                f"store={db}",
                "gold=true",
            ]
        )
    assert main(["import", write_jsonl(tmp_path / "v.jsonl", [good]), f"store={db}", "gold=true"]) == 0
    store = open_store(db)
    assert list(store.gold_answers().values()) == [[2, 1, 3]] and store.count_tasks() == 1
    store.close()
