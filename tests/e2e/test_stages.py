"""The README's Stages table, run literally in order (tiny settings appended), chains by the run folder.

Each command is the table's, from a folder holding a copy of configs/: `run: runs/tiny` in every config is
the only link between the stages. The ranking step is the scripted annotator through the real server
(`rlhf rank annotate`), as a team dry-runs its campaign. Then each stage's manifest must say it read the
previous stage's output.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

TINY = {
    # enough SFT that the tiny model writes a few words after a prompt (the base alone stops at once)
    "sft": ["data.limit=160", "data.eval_size=0", "train.per_device_batch_size=8", "train.max_steps=20",
            "checkpoint.save_steps=0"],
    "sample": ["limit=12", "repeats=1", "max_new_tokens=12"],
    "annotate": ["users=bot1,bot2", "score=alignment.assets.gold:gold_reward", "create_users=true", "password=bot-pw"],
    "export": [],
    "reward": ["train.max_steps=2", "data.reference_size=8", "checkpoint.save_steps=0"],
    "ppo": ["train.total_episodes=8", "rollout.per_device_batch_size=4", "rollout.response_length=6", "ppo.epochs=1",
            "ppo.num_minibatches=1", "checkpoint.save_steps=0", "train.sample_steps=0"],
    "eval": ["data.limit=2", "generation.num_samples=2", "generation.max_new_tokens=6"],
}  # fmt: skip


def readme_commands() -> dict[str, list[str]]:
    """The Stages table's commands (`rlhf ...` in backticks in the command column), by stage."""
    text = open(os.path.join(REPO, "README.md")).read()
    table = text[text.index("## Stages") :].split("\n\n")[2]
    found = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        commands = [c.split("`")[0] for c in cells[1].split("`rlhf ")[1:]]
        found[cells[0]] = [c.split() for c in commands]
    return found


def test_readme_stages_chain_through_the_run_folder(tmp_path):
    shutil.copytree(os.path.join(REPO, "configs"), tmp_path / "configs")
    table = readme_commands()
    steps = [("sft", table["SFT"][0]), ("sample", table["sample"][0]), ("annotate", table["rank"][1][:3]),
             ("export", table["export"][0]), ("reward", table["reward"][0]), ("ppo", table["PPO"][0]),
             ("eval", table["eval"][0])]  # fmt: skip
    assert steps[2][1] == ["rank", "annotate", "configs/rank.yaml"]
    for name, command in steps:
        r = run_cli(*command, *TINY[name], cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, (name, command, r.stderr[-3000:])

    run = tmp_path / "runs" / "tiny"

    def manifest(stage: str) -> dict:
        return json.loads((run / stage / "manifest.json").read_text())

    def at(*parts: str) -> str:
        return str(run.joinpath(*parts))

    sft = manifest("sft")
    assert sft["outputs"]["model"] == "merged"
    sample = manifest("sample")
    assert sample["inputs"]["model"] == at("sft", "merged")  # sampled from the SFT model
    assert sample["outputs"]["store"] == at("rankings.db")
    export = manifest("export")
    assert os.path.abspath(os.path.join(tmp_path, export["inputs"]["store"])) == at("rankings.db")
    assert export["outputs"]["kwise"]["rows"]["train"] > 0  # the scripted annotators' rankings
    reward = manifest("reward")
    assert reward["inputs"]["base"] == at("sft", "merged")  # trained on the SFT model ...
    assert reward["inputs"]["data"] == at("export", "kwise")  # ... with the export
    assert reward["inputs"]["eval_data"] == at("export", "kwise")
    ppo = manifest("ppo")
    assert ppo["inputs"]["model"] == at("sft", "merged") and ppo["inputs"]["reward"] == at("reward")
    assert ppo["reward_kind"] == "adapter"  # the reward adapter rides on the SFT base
    result = json.loads((run / "eval" / "eval.json").read_text())
    assert result["reference"] == at("sft", "merged")
    assert result["inputs"]["policies"] == {"sft": at("sft", "merged"), "ppo": at("ppo")}
    assert result["inputs"]["reward_model"] == at("reward")
