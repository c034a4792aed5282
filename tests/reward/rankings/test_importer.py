"""`rlhf rank import`: completions from other models, TRL pairwise and our K-wise files; dedupe; bad rows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignment.commands.rank import main
from alignment.common.errors import UserError
from reward.rankings.store import open_store
from tests.conftest import write_jsonl


def test_imports_completions_with_model_names_shown_and_dedupes_like_sample(tmp_path, capsys):
    db = str(tmp_path / "run" / "rankings.db")
    rows = [
        {
            "prompt": "Name a colour.",
            "completions": ["red", {"text": "blue", "model": "m-b"}],
            "models": ["m-a", "m-b"],
        },
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "completions": [{"text": "hello", "model": "x"}, {"text": "yo"}],
        },
        {"prompt": "Name a colour.", "completions": ["blue", "red"], "models": ["m-b", "m-a"]},  # the same task
        {"prompt": "dup", "completions": ["same", "same"]},  # nothing to rank: skipped, like `rlhf sample`
        {"prompt": "empty", "completions": ["ok", "  "]},  # an empty completion: skipped
    ]
    path = write_jsonl(tmp_path / "tasks.jsonl", rows)
    assert main(["import", path, f"store={db}", "show_models=true", "tag=campaign-1"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 new tasks" in out and "2 skipped" in out
    store = open_store(db)
    u = store.add_user("ann", password="pw12")
    views = []
    while (v := store.next_task(u, 1, 60)) is not None:
        views.append(v)
        store.skip(u, v.task_id)
    shown = {c["text"]: c.get("model") for v in views for c in v.completions}
    assert shown == {"red": "m-a", "blue": "m-b", "hello": "x", "yo": ""}
    assert views[0].meta["tag"] == "campaign-1"
    store.close()
    # importing the same file again adds nothing
    assert main(["import", path, f"store={db}"]) == 0
    assert "imported 0 new tasks" in capsys.readouterr().out


def test_imports_trl_pairwise_and_our_kwise_export(tmp_path):
    db = str(tmp_path / "r.db")
    pairwise = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "p1", "chosen": "good", "rejected": "bad"},
            {
                "prompt": "p2",
                "chosen": [{"role": "assistant", "content": "A"}],
                "rejected": [{"role": "assistant", "content": "B"}],
            },
        ],  # fmt: skip
    )
    kwise = write_jsonl(
        tmp_path / "kwise.jsonl",
        [
            {
                "prompt": "p3",
                "completions": ["x", "y", "z"],
                "ranks": [2, 1, 3],
                "annotator": "ann",
                "task_id": 7,
                "meta": {},
            }
        ],
    )
    assert main(["import", pairwise, f"store={db}"]) == 0
    assert main(["import", kwise, f"store={db}", "format=kwise"]) == 0
    store = open_store(db)
    u = store.add_user("ann", password="pw12")
    metas = {}
    while (v := store.next_task(u, 1, 60)) is not None:
        metas[v.prompt] = (sorted(c["text"] for c in v.completions), v.meta)
        store.skip(u, v.task_id)
    assert metas["p1"][0] == ["bad", "good"] and metas["p2"][0] == ["A", "B"]
    assert metas["p3"][1]["source_ranks"] == [2, 1, 3] and metas["p3"][1]["source_annotator"] == "ann"
    store.close()


def test_a_datasets_folder_imports(tmp_path):
    from datasets import Dataset

    folder = str(tmp_path / "ds")
    Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}]).save_to_disk(folder)
    assert main(["import", folder, f"store={tmp_path / 'r.db'}"]) == 0
    assert open_store(str(tmp_path / "r.db")).count_tasks() == 1


def test_priority_from_the_rows_or_the_config_orders_serving(tmp_path):
    rows = [
        {"prompt": "first", "completions": ["a", "b"]},  # the config's priority
        {"prompt": "second", "completions": ["a", "b"], "priority": 7.5},
        {"prompt": "third", "chosen": "a", "rejected": "b", "priority": -2},
    ]
    db = str(tmp_path / "r.db")
    assert main(["import", write_jsonl(tmp_path / "t.jsonl", rows), f"store={db}", "priority=1"]) == 0
    store = open_store(db)
    users = [store.add_user(f"u{i}", password="pw12") for i in range(3)]
    assert [store.next_task(u, 1, 60).prompt for u in users] == ["second", "first", "third"]
    store.close()


@pytest.mark.parametrize(
    "bad, match",
    [
        ('{"prompt": "p", "completions": ["only one"]}', ":2: 'completions' must be a list of at least 2"),
        ('{"prompt": "", "completions": ["a", "b"]}', ":2: expected a non-empty 'prompt'"),
        ('{"prompt": "p", "completions": ["a", 3]}', ":2: completion 1 must be"),
        ('{"prompt": "p", "completions": ["a", "b"], "models": ["m"]}', ":2: 'models' must be"),
        ('{"prompt": "p", "text": "no completions"}', ":2: cannot tell the format"),
        ("{broken", ":2: not valid JSON"),
        ('{"prompt": "p", "completions": ["a", "b"], "priority": "high"}', ":2: 'priority' must be a finite number"),
        ('{"prompt": "p", "completions": ["a", "b"], "priority": NaN}', ":2: 'priority' must be a finite number"),
    ],
)
def test_a_bad_row_is_one_line_naming_file_and_row_and_nothing_is_imported(tmp_path, bad, match):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "fine", "completions": ["a", "b"]}\n' + bad + "\n")
    db = tmp_path / "r.db"
    with pytest.raises(UserError, match=match.replace("[", r"\[")):
        main(["import", str(path), f"store={db}"])
    assert not db.exists() or open_store(str(db)).count_tasks() == 0


def test_the_command_exits_2_with_one_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "p", "completions": ["a"]}\n')
    r = subprocess.run(
        [sys.executable, "-m", "alignment", "rank", "import", str(path), f"store={tmp_path / 'r.db'}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"{path}:1" in r.stderr
