"""Shared fixtures: tiny models built from a config and saved to disk, loaded through from_pretrained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from alignment.runtime import cpu_tuning

# The tests run stages in this process, as `rlhf` runs them in its own: the same process-wide settings, made before
# torch loads (a stage called as a library makes none; tests/alignment/runtime/test_cpu_tuning.py).
cpu_tuning.apply()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """A 2-layer, 32-wide Llama saved with save_pretrained (no tokenizer; for adapter/model tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def builtin_model() -> str:
    """The embedded default (`builtin:tiny-llama`): pretrained briefly on the shipped corpus, cached."""
    from alignment.runtime import tiny

    return tiny.resolve("builtin:tiny-llama")


def run_cli(*args: str, env: dict | None = None, timeout: int = 600, cwd=REPO) -> subprocess.CompletedProcess:
    """Run `python -m alignment ...` in a fresh process, as a user would (from the checkout unless `cwd`)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alignment", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_stage(stage: str, *overrides: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`run_cli(stage, ...)` that fails the test with the command and its stderr tail unless `check=False`."""
    proc = run_cli(stage, *overrides, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{stage} {' '.join(overrides)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def write_jsonl(path, rows) -> str:
    """Rows as JSON lines at `path`; returns the path as a string (what data.path overrides take)."""
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def accelerate_launch(
    mode: str, *args: str, env: dict | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Two CPU processes under `accelerate launch`: mode is ddp, zero2 or zero3 (PLATFORM.md's recipes)."""
    base = [sys.executable, "-m", "accelerate.commands.launch"]
    extra = dict(env or {})
    if mode == "ddp":
        cmd = base + ["--config_file", "launch/ddp_cpu.yaml"]
        extra["ACCELERATE_USE_CPU"] = "true"
    else:
        # DeepSpeed on CPU: no ACCELERATE_USE_CPU (it would silently drop DeepSpeed).
        cmd = base + ["--config_file", f"launch/{mode}.yaml", "--num_processes", "2"]
        extra["DS_ACCELERATOR"] = "cpu"
    full_env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    full_env.update({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "MASTER_PORT": str(free_port()), **extra})
    cmd += ["--main_process_port", full_env["MASTER_PORT"], "-m", "alignment", *args]
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmallDisk:
    """A real tmpfs of a given size mounted on a folder: writes past it fail as they do on a full disk."""

    def __init__(self, path, size: str):
        self.path = str(path)
        self.size = size

    def resize(self, size: str) -> None:
        """Grow (or shrink) the disk in place, files kept: what an operator does after a full-disk failure."""
        subprocess.run(["mount", "-o", f"remount,size={size}", self.path], check=True, capture_output=True)
        self.size = size

    def fill(self, leave_bytes: int) -> None:
        """Take all but about `leave_bytes` of the free space with a file of zeros."""
        free = shutil.disk_usage(self.path).free
        with open(os.path.join(self.path, "filler"), "ab") as f:
            f.write(b"\0" * max(free - leave_bytes, 0))

    def leftovers(self) -> list[str]:
        """Temporary files or folders anywhere on the disk (what a failed write must not leave)."""
        return [os.path.join(d, n) for d, dirs, names in os.walk(self.path) for n in dirs + names if ".tmp" in n]


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk("2m")` mounts a real tmpfs of that size (unmounted after the test). Skips where mounting is not
    permitted (not root, or a container without the capability): the full-disk tests need a real full disk."""
    mounted: list[SmallDisk] = []

    def mount(size: str) -> SmallDisk:
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(SmallDisk(path, size))
        return mounted[-1]

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", disk.path], capture_output=True)


def pytest_collection_modifyitems(config, items):
    """`extended` tests repeat what CI already covers on other seeds or launch kinds; CI's 30-minute budget on 2
    cores leaves them to RLHF_EXTENDED_TESTS=1 (`RLHF_EXTENDED_TESTS=1 .venv/bin/python -m pytest -m extended`).
    The worlds tests go last: they read the demo test's run of the demo's world (`tests/e2e/conftest.py`)."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/e2e/test_worlds.py"))  # stable: the rest keep order
    if os.environ.get("RLHF_EXTENDED_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="extended grid: set RLHF_EXTENDED_TESTS=1")
    for item in items:
        if "extended" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def second_world():
    """(the run's folder, its log) of the worlds test's second world: a whole demo run of another world (minutes),
    trained when the worlds tests (last in the session) first ask for it. Not in the background beside the other
    tests: on 2 cores it slowed every test it overlapped (the demo's own run took 8.5 min beside it, 3 min alone)."""
    import tempfile

    from tests.e2e.test_worlds import SECOND

    folder = tempfile.mkdtemp(prefix="rlhf-second-world-")
    worlds = [sys.executable, "benchmarks/worlds.py", "--worlds", SECOND, "--seeds", "42", "--out", folder]
    # its own model cache: the worlds test then loads the world's base from there
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "RLHF_CACHE": os.path.join(folder, "cache")}
    proc = subprocess.run(worlds, cwd=REPO, capture_output=True, text=True, timeout=2400, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return folder, text
