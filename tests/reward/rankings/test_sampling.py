"""`rlhf sample`: K completions per prompt from an SFT run folder into the ranking store."""

import json
import sqlite3

import pytest

from tests.conftest import accelerate_launch, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    r = run_cli(
        "sft", "configs/sft.yaml", f"output_dir={out}", "data.limit=640", "train.max_steps=40", "train.log_steps=10"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def tasks(db):
    with sqlite3.connect(db) as c:
        n_tasks = c.execute("select count(*) from tasks").fetchone()[0]
        per_task = c.execute(
            "select task_id, count(*), group_concat(distinct model) from completions group by task_id"
        ).fetchall()
    return n_tasks, per_task


def test_sample_fills_the_store_once(tmp_path, sft_dir):
    args = [
        "sample",
        f"output_dir={tmp_path}",
        f"model.name_or_path={sft_dir}",
        "prompts=builtin:reviews-prompts",
        "k=3",
        "limit=5",
        "repeats=2",
        "max_new_tokens=16",
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    n, per_task = tasks(tmp_path / "rankings.db")
    assert n == 10 and all(count == 3 for _, count, _ in per_task)
    assert all(model.endswith("merged") for _, _, model in per_task)  # the SFT folder's merged model
    again = run_cli(*args)
    assert again.returncode == 0 and "0 new tasks" in again.stderr
    assert tasks(tmp_path / "rankings.db")[0] == 10
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["metrics"]["completions"] == 30


def test_chat_prompts_and_bad_rows(tmp_path, sft_dir):
    rows = [{"messages": [{"role": "user", "content": "Review of the cafe:"}, {"role": "assistant", "content": "x"}]}]
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    r = run_cli("sample", f"output_dir={tmp_path}", f"model.name_or_path={sft_dir}", f"prompts={tmp_path / 'p.jsonl'}")
    assert r.returncode == 2 and f"{tmp_path / 'p.jsonl'}:2: expected a non-empty 'prompt'" in r.stderr
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n")
    r = run_cli(
        "sample",
        f"output_dir={tmp_path}",
        f"model.name_or_path={sft_dir}",
        f"prompts={tmp_path / 'p.jsonl'}",
        "max_new_tokens=8",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    with sqlite3.connect(tmp_path / "rankings.db") as c:
        text, is_chat = c.execute("select text, is_chat from prompts").fetchone()
    assert is_chat and json.loads(text)[-1]["role"] == "user"  # the assistant answer is not part of the prompt


@pytest.mark.distributed
def test_sample_shards_prompts_over_two_processes(tmp_path, sft_dir):
    r = accelerate_launch(
        "ddp",
        "sample",
        f"output_dir={tmp_path}",
        f"model.name_or_path={sft_dir}",
        "prompts=builtin:reviews-prompts",
        "limit=6",
        "k=2",
        "max_new_tokens=8",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 process(es)" in r.stderr
    n, per_task = tasks(tmp_path / "rankings.db")
    assert n == 6 and all(count == 2 for _, count, _ in per_task)
