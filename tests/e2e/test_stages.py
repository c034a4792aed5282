"""The Stages table of docs/stages.md, run literally in order (tiny settings appended), chains by the run folder.

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


def stage_table_commands() -> dict[str, list[str]]:
    """The Stages table's commands (`rlhf ...` in backticks in the command column), by stage."""
    text = open(os.path.join(REPO, "docs/stages.md")).read()
    table = text[text.index("## Stages") :].split("\n\n")[2]
    found = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        commands = [c.split("`")[0] for c in cells[1].split("`rlhf ")[1:]]
        found[cells[0]] = [c.split() for c in commands]
    return found


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    """The Stages table's commands, in order, from a folder holding a copy of configs/; returns that folder."""
    root = tmp_path_factory.mktemp("stages")
    shutil.copytree(os.path.join(REPO, "configs"), root / "configs")
    table = stage_table_commands()
    steps = [("sft", table["SFT"][0]), ("sample", table["sample"][0]), ("annotate", table["rank"][1][:3]),
             ("export", table["export"][0]), ("reward", table["reward"][0]), ("ppo", table["PPO"][0]),
             ("eval", table["eval"][0])]  # fmt: skip
    assert steps[2][1] == ["rank", "annotate", "configs/rank.yaml"]
    for name, command in steps:
        r = run_cli(*command, *TINY[name], cwd=root, env={"OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, (name, command, r.stderr[-3000:])
    return root


def test_the_stages_table_chains_through_the_run_folder(chained):
    tmp_path = chained
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


def test_a_copied_run_loads_with_peft_and_the_docs_lines_and_scores_the_same(chained, tmp_path, monkeypatch):
    import torch
    from peft import AutoPeftModelForCausalLM

    from alignment.config.shared import ModelConfig
    from alignment.runtime import hub, models
    from reward.model import load_reward_model, score_texts

    moved = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(chained / "runs" / "tiny", moved)
    shutil.rmtree(chained / "runs" / "tiny")  # the original is gone: nothing may point back at it
    assert json.loads((moved / "reward" / "adapter_config.json").read_text())["base_model_name_or_path"] == "sft/merged"
    assert json.loads((moved / "ppo" / "adapter_config.json").read_text())["base_model_name_or_path"] == "sft/merged"
    for stage in ("sft", "reward", "ppo"):
        card = (moved / stage / "README.md").read_text()
        assert "## Hyperparameters" in card and "## Load it" in card and "base model" in card, stage

    prompt, completion = "Review of the cafe:", " Great coffee and friendly staff."
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])

    def logits(model):
        return model.eval()(input_ids=ids).logits.float()

    # the framework's own loaders, from the new place
    cfg = ModelConfig(dtype="float32")
    framework = {stage: logits(models.load_causal_lm(cfg, str(moved / stage))) for stage in ("sft", "ppo")}
    reward_model, tok = load_reward_model(str(moved / "reward"))
    framework_score = score_texts(reward_model, tok, [prompt], [completion])[0]

    # PEFT's auto class on the SFT adapter (its base is the built-in model's folder, recorded absolute)
    assert torch.allclose(logits(AutoPeftModelForCausalLM.from_pretrained(str(moved / "sft"))), framework["sft"])

    # the loading lines of docs/runs.md, verbatim but for where the run folder now is
    page = open(os.path.join(REPO, "docs/runs.md")).read()
    code = page.split("<!-- loading-lines -->")[1].split("```python")[1].split("```")[0]
    code = code.replace('"runs/tiny"', repr(str(moved))).replace(
        'prompt, completion = "Review of the cafe:", " Great coffee and friendly staff."', ""
    )
    monkeypatch.chdir(tmp_path)
    scope = {"prompt": prompt, "completion": completion}
    exec(compile(code, "docs/runs.md", "exec"), scope)
    assert scope["score"] == pytest.approx(framework_score, abs=1e-5)
    assert torch.allclose(logits(scope["policy"]), framework["ppo"], atol=1e-5)
    assert torch.allclose(logits(scope["policy_too"]), framework["ppo"], atol=1e-5)

    # push_to_hub: the only network step is the upload; what it would upload loads on its own from another path
    uploaded = {}

    class FakeApi:  # stands in for the Hub only; staging, merging and loading are real
        def create_repo(self, repo_id, private=True, exist_ok=False):
            uploaded["repo"] = (repo_id, private)

        def upload_folder(self, folder_path, repo_id, commit_message=""):
            shutil.copytree(folder_path, tmp_path / "hub" / repo_id)

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    for stage in ("reward", "ppo"):
        hub.push(str(moved / stage), f"me/{stage}", private=True)
    assert uploaded["repo"] == ("me/ppo", True)
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    shutil.rmtree(moved)  # the run is gone too: the uploaded folders stand alone
    pushed_reward = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hub" / "me" / "reward"))
    pushed_tok = AutoTokenizer.from_pretrained(str(tmp_path / "hub" / "me" / "reward"))
    assert score_texts(pushed_reward.eval(), pushed_tok, [prompt], [completion])[0] == pytest.approx(
        framework_score, abs=1e-4
    )
    pushed_policy = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hub" / "me" / "ppo"))
    assert torch.allclose(logits(pushed_policy), framework["ppo"], atol=1e-4)
    assert (tmp_path / "hub" / "me" / "ppo" / "README.md").is_file()
