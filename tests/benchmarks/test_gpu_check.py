"""benchmarks/gpu_check.sh: its CPU smoke mode runs SFT, sampling and PPO through the script's own path."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def _run(*args, **env):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})  # fmt: skip


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
def test_without_a_gpu_it_says_so_and_exits_cleanly():
    proc = _run(CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [
        "gpu_check: no CUDA GPU visible; nothing to measure "
        "(bash benchmarks/gpu_check.sh --dry-run runs the CPU smoke check)"
    ]


@pytest.mark.slow
def test_dry_run_prints_every_figure_from_real_runs():
    proc = _run("--dry-run", CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["dry_run"] and summary["device"] == "cpu (dry run)"
    assert summary["sft"]["tokens_per_second"] > 0 and summary["sample"]["tokens_per_second"] > 0
    assert summary["sample"]["bytes_per_second"] > 0
    assert summary["ppo"]["episodes_per_second"] > 0 and 0 < summary["ppo"]["peak_gb"] < 64
    assert any(line.startswith("SFT: ") and "MFU" in line for line in lines)
    assert any(line.startswith("sampling: ") and "bandwidth" in line for line in lines)
    assert any(line.startswith("PPO: ") and "peak memory" in line for line in lines)
