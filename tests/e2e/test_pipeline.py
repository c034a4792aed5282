"""`rlhf pipeline` end to end on a tiny config: two rounds, then a resume from the reward stage."""

import json
import sqlite3

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

TINY = [
    "sft=[train.max_steps=30,data.limit=640,save_merged=true]",
    "sample=[repeats=2,k=3,max_new_tokens=16]",
    "reward=[train.epochs=1,train.log_steps=5]",
    "ppo=[train.total_episodes=32,rollout.per_device_batch_size=8,rollout.response_length=12,checkpoint.save_steps=0]",
    "annotators.count=2",
    "annotators.per_task=2",
]


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_two_rounds_then_resume_from_reward(tmp_path):
    out = tmp_path / "run"
    r = run_cli("pipeline", "configs/pipeline.yaml", f"output_dir={out}", "rounds=2", *TINY, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    for folder in (out / "sft", out / "reward", out / "ppo", out / "round-2" / "reward", out / "round-2" / "ppo"):
        assert (folder / "manifest.json").is_file(), folder
    # Round 2's adapters record the SFT base relative to the run folder (not round-2/): the run can move.
    for folder in (out / "round-2" / "reward", out / "round-2" / "ppo"):
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "sft/merged"
    # Round 2 sampled from round 1's policy, and every ranking of both rounds stayed in the one store.
    assert manifest(out / "round-2" / "sample")["inputs"]["model"].endswith("ppo")
    with sqlite3.connect(out / "rankings.db") as db:
        tags = dict(db.execute("select json_extract(meta, '$.tag'), count(*) from tasks group by 1").fetchall())
        rankings = db.execute("select count(*) from rankings").fetchone()[0]
    assert set(tags) == {"round-1", "round-2"}
    assert rankings == 2 * sum(tags.values())  # exactly 2 annotators per task
    # Round 2's export holds every ranking of both rounds (per-annotator rows).
    assert sum(manifest(out / "round-2" / "export")["outputs"]["kwise"]["rows"].values()) == rankings

    # Resume after the ranking: the stages before `reward` are not run again.
    before = (out / "sft" / "manifest.json").stat().st_mtime
    r = run_cli("pipeline", "configs/pipeline.yaml", f"output_dir={out}", "from_stage=reward", *TINY, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "sft: running" not in r.stdout and "round-1/reward: running" in r.stdout
    assert (out / "sft" / "manifest.json").stat().st_mtime == before


def test_a_failing_stage_is_one_line_naming_it_and_its_log(tmp_path):
    r = run_cli("pipeline", "configs/pipeline.yaml", f"output_dir={tmp_path}", "sft=[data.path=missing.jsonl]")
    assert r.returncode == 2
    assert "stage 'sft' failed (exit 2): error: data.path: 'missing.jsonl' does not exist" in r.stderr
    assert "logs/sft.log" in r.stderr


def test_dpo_rounds_train_no_reward_model(tmp_path):
    """method=dpo: SFT, sampling, ranking, export and DPO, and no reward model, which nothing would read."""
    out = tmp_path / "run"
    tiny = [t for t in TINY if not t.startswith(("reward=", "ppo="))]
    dpo = "dpo=[train.max_steps=2,checkpoint.save_steps=0]"
    r = run_cli("pipeline", "configs/pipeline.yaml", f"run={out}", "method=dpo", dpo, *tiny, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert (out / "dpo" / "manifest.json").is_file() and (out / "export" / "kwise").is_dir()
    assert not (out / "reward").exists() and "reward: running" not in r.stdout
    assert json.loads((out / "dpo" / "adapter_config.json").read_text())["base_model_name_or_path"] == "sft/merged"
