"""alignment/runtime/cpu_tuning.py: process-wide settings come from the command line only. Importing the packages
and calling a stage as a library leave the environment, the allocator, torch's threads and torch.nn.functional as
they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from alignment.runtime import cpu_tuning

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STAGES = (
    "alignment.sft",
    "alignment.dpo.train",
    "alignment.ppo.train",
    "alignment.evaluate",
    "alignment.bon",
    "alignment.pipeline",
    "alignment.demo",
    "reward.train",
    "reward.rankings.sampling",
    "alignment.cli",
)


def run_python(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", cpu_tuning.SWITCH)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**full, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_importing_the_packages_and_every_stage_leaves_the_environment_unchanged():
    code = (
        "import os, json\nbefore = dict(os.environ)\nimport alignment, reward\n"
        + "".join(f"import {m}\n" for m in STAGES)
        + "after = dict(os.environ)\n"
        + "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after) "
        + "if before.get(k) != after.get(k)}))"
    )
    assert json.loads(run_python(code)) == {}


def test_the_command_line_applies_the_settings_and_the_switch_turns_them_off():
    code = (
        "import contextlib, io, os\nfrom alignment import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    cli.main(['--help'])\n"
        "print(os.environ.get('GOMP_SPINCOUNT'))"
    )
    assert run_python(code) == cpu_tuning.GOMP_SPINCOUNT
    assert run_python(code, RLHF_CPU_TUNING="off") == "None"


def test_only_the_tuning_module_calls_mallopt():
    """The allocator is set in one place, so a library call cannot set it behind the caller's back."""
    found = []
    for top in ("alignment", "reward"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and "mallopt" in open(path, encoding="utf-8").read():
                    found.append(os.path.relpath(path, REPO))
    assert found == [os.path.join("alignment", "runtime", "cpu_tuning.py")]


THIRD_PARTY_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK", "TORCHINDUCTOR_CACHE_DIR"}
"""Set by accelerate (its CUDA check) and torch's inductor (its cache folder) on first use, not by this project."""


def snapshot() -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in THIRD_PARTY_ENV}
    return {"environ": environ, "threads": torch.get_num_threads(), "linear": torch.nn.functional.linear}


@pytest.fixture
def no_allocator_change(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_tuning, "set_malloc_option", lambda *a: calls.append(a) or True)
    yield calls
    assert calls == []


def test_sampling_on_cpu_as_a_library_changes_no_process_setting(monkeypatch, no_allocator_change):
    """Sampling with the few-row path forced on: its layer swap stays inside the model and the call."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.runtime import generation as G

    monkeypatch.setenv(G.FEW_ROW_SWITCH, "on")
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    before = snapshot()
    ids = torch.tensor([[5, 6, 7], [0, 8, 9]])
    out = G.generate(model, ids, (ids != 0).long(), G.generation_config(4, 1.0, 0, None))
    assert out.responses.shape == (2, 4)
    assert snapshot() == before  # the same F.linear object, environment and threads
    assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.slow
def test_a_stage_called_as_a_library_changes_no_process_setting(tmp_path, builtin_model, no_allocator_change):
    from alignment.config import load_config
    from alignment.sft import SFTConfig, train

    cfg = load_config(
        SFTConfig,
        None,
        [
            f"output_dir={tmp_path / 'sft'}",
            f"model.name_or_path={builtin_model}",
            "data.path=builtin:reviews-sft",
            "data.limit=8",
            "train.max_steps=1",
            "train.per_device_batch_size=4",
            "save_merged=false",
        ],
    )
    before = snapshot()
    train(cfg)
    after = snapshot()
    assert after == before


def test_the_malloc_threshold_is_chosen_per_stage(monkeypatch):
    """PPO keeps glibc's mmap threshold at 1 MiB (its heap fragments), the other stages 4 MiB (their activations of
    a few MB come from the heap, faster); a threshold in the environment wins."""
    calls = []
    monkeypatch.setattr(cpu_tuning, "set_malloc_option", lambda option, value: calls.append((option, value)) or True)
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    monkeypatch.delenv(cpu_tuning.SWITCH, raising=False)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert cpu_tuning.apply("ppo")["MALLOC_MMAP_THRESHOLD_"] == str(1 << 20)
    assert (
        cpu_tuning.apply("sft")["MALLOC_MMAP_THRESHOLD_"]
        == str(4 << 20)
        == cpu_tuning.environment("dpo")["MALLOC_MMAP_THRESHOLD_"]
    )
    assert (cpu_tuning.M_MMAP_THRESHOLD, 1 << 20) in calls and (cpu_tuning.M_MMAP_THRESHOLD, 4 << 20) in calls
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "123")
    calls.clear()
    assert "MALLOC_MMAP_THRESHOLD_" not in cpu_tuning.apply("sft") and all(
        option != cpu_tuning.M_MMAP_THRESHOLD for option, _ in calls
    )
