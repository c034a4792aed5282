"""push_to_hub without a token or a network (this machine has none): one line and exit 2 before anything trains, and
a push that fails after training is one line that keeps the trained folder."""

from __future__ import annotations

import os

import pytest

from alignment.common.errors import UserError
from tests.conftest import REPO, run_cli


@pytest.mark.parametrize(
    "stage, config, token, words",
    [
        ("sft", "configs/sft.yaml", None, "no Hugging Face token; set HF_TOKEN"),
        ("ppo", "configs/ppo.yaml", "hf_not_a_real_token", "cannot reach the Hugging Face Hub"),
    ],
)
def test_push_to_hub_is_checked_before_training(tmp_path, stage, config, token, words):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": token or "", "HF_HUB_OFFLINE": ""}
    run = tmp_path / "run"
    proc = run_cli(
        stage,
        os.path.join(REPO, config),
        f"run={run}",
        "push_to_hub=true",
        "hub_model_id=me/model",
        *(["reward.path=null", "reward.function=alignment.assets.gold:gold"] if stage == "ppo" else []),
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "nothing was trained" in lines[0], proc.stderr
    assert "push_to_hub to me/model" in lines[0]
    assert not run.exists()  # nothing loaded, nothing written


def test_a_failed_push_is_one_line_and_keeps_the_folder(tiny_llama_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignment.runtime import hub

    folder = tmp_path / "run" / "sft"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir), LoraConfig(r=2, target_modules=["q_proj"])
    )
    model.save_pretrained(str(folder))
    before = sorted(os.listdir(folder))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(UserError) as err:
        hub.push_or_explain(str(folder), "me/model")
    message = str(err.value)
    assert "\n" not in message and message.startswith("push_to_hub to me/model failed (")
    assert f"the trained model is kept in {folder}" in message and "hub.push(" in message
    assert sorted(os.listdir(folder)) == before
