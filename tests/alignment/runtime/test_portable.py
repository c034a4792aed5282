"""Runs that travel: where an adapter records its base, and the card's loading lines after the run folder moves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from alignment.runtime import card, models


def save_adapter(base: str, folder, task_type: str = "CAUSAL_LM") -> str:
    """A LoRA adapter of `base` (loaded by the path given, as a stage loads it) saved the PEFT way to `folder`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type=task_type))
    peft.save_pretrained(str(folder))
    return str(folder)


def save_tokenizer(folder) -> None:
    """A word-level tokenizer over the tiny model's 64 ids, saved beside an adapter as the stages save theirs."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, 64)}}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(folder))


@pytest.fixture
def project(tiny_llama_dir, tmp_path, monkeypatch):
    """A working directory with an own base (own/model) and a run folder whose sft/merged is a copy of it."""
    shutil.copytree(tiny_llama_dir, tmp_path / "own" / "model")
    shutil.copytree(tiny_llama_dir, tmp_path / "runs" / "x" / "sft" / "merged")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def recorded(folder) -> str:
    return json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]


def test_a_base_given_relative_to_the_working_directory_is_recorded_absolute_outside_the_run(project):
    folder = save_adapter("own/model", project / "runs" / "x" / "sft")
    assert recorded(project / "runs" / "x" / "sft") == "own/model"  # what PEFT writes: cwd-relative, breaks on a move
    assert models.portable_base(folder, run="runs/x") == str(project / "own" / "model")
    assert recorded(project / "runs" / "x" / "sft") == str(project / "own" / "model")


@pytest.mark.parametrize("output", ["reward", "round-2/reward", "round-3/ppo"])
def test_a_base_inside_the_run_is_recorded_relative_to_the_run_in_every_round(project, output):
    folder = save_adapter(str(project / "runs" / "x" / "sft" / "merged"), project / "runs" / "x" / output)
    models.portable_base(folder, run=str(project / "runs" / "x"))
    assert recorded(project / "runs" / "x" / output) == "sft/merged"
    shutil.move(project / "runs" / "x", project / "moved")  # the run folder moves: the base is found from the adapter
    assert models.adapter_base(str(project / "moved" / output)) == str(project / "moved" / "sft" / "merged")


def test_without_run_the_folder_above_the_output_is_the_run_and_hub_ids_stay(project):
    folder = save_adapter("runs/x/sft/merged", project / "runs" / "x" / "dpo")
    models.portable_base(folder)
    assert recorded(project / "runs" / "x" / "dpo") == "sft/merged"
    config = project / "runs" / "x" / "dpo" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": "Qwen/Qwen2.5-0.5B"}))
    assert models.portable_base(folder) == "Qwen/Qwen2.5-0.5B" and recorded(config.parent) == "Qwen/Qwen2.5-0.5B"


def manifest(stage: str, **extra) -> dict:
    return {"stage": stage, "finished": "now", "inputs": {"data": "d.jsonl"}, "outputs": {"adapter": "."}, **extra}


def policy_card(project, stage: str, algorithm: str | None = None) -> tuple[str, str]:
    """(the run folder, the card's text) of a policy adapter saved in round 2 of a run, as the stages save one."""
    run = project / "runs" / "x"
    out = run / "round-2" / (algorithm or stage)
    save_adapter(str(run / "sft" / "merged"), out)
    models.portable_base(str(out), run=str(run))
    save_tokenizer(out)
    (out / "config.yaml").write_text("loss:\n  type: sigmoid\n  beta: 0.25\n" if stage == "dpo" else "seed: 1\n")
    extra = {"algorithm": algorithm} if algorithm else {}
    return str(run), open(card.write(str(out), manifest(stage, **extra), run=str(run))).read()


@pytest.mark.parametrize(
    "stage, algorithm, words",
    [
        ("ppo", "ppo", "The PPO policy"),
        ("ppo", "rloo", "The RLOO policy"),
        ("ppo", "grpo", "The GRPO policy"),
        ("dpo", None, "The DPO policy"),
    ],
)
def test_cards_name_their_method_and_say_where_the_base_is(project, stage, algorithm, words):
    _, text = policy_card(project, stage, algorithm)
    name = algorithm or stage
    assert words in text and "PPO policy" not in text.replace(words, "")
    assert f"# x/round-2/{name}: {name}" in text and "`sft/merged`, inside this run folder" in text
    if stage == "dpo":
        assert "`sigmoid` loss (beta 0.25)" in text and "| `loss.type` | sigmoid |" in text
        assert "| `loss.beta` | 0.25 |" in text
    code = text.split("```python")[1].split("```")[0]
    assert f'"round-2/{name}"' in code and '"sft/merged"' in code


@pytest.mark.slow
def test_the_cards_loading_lines_run_verbatim_after_the_run_folder_moves(project):
    run, text = policy_card(project, "ppo", "rloo")
    code = text.split("```python")[1].split("```")[0]
    moved = project / "elsewhere" / "x"
    shutil.move(run, moved)
    proc = subprocess.run([sys.executable, "-c", code], cwd=moved, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
