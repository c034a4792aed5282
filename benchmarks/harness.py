"""What the framework-vs-TRL benchmarks share: each side in a fresh worker process, one JSON line back.

A benchmark script runs itself again with `--worker SIDE --work DIR` plus its own command line, so a worker
sees the same settings as the parent; the worker prints one JSON object as its last stdout line. Peak memory
is the worker's own peak RSS, so sides never share an allocator or imports.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (getrusage; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> float:
    """The 1-minute load average (what the speed ratios of a run on shared cores should be read with)."""
    return os.getloadavg()[0]


def run_worker(script: str, side: str, work: str, threads: int, python: str = sys.executable, argv=None,
               env: dict | None = None, cwd: str = ROOT, label: str | None = None) -> dict:  # fmt: skip
    """Run `python script --worker side --work work *argv` (argv: this command line by default) with `threads`
    OpenMP threads, wandb off; returns the JSON object the worker printed last. A failed worker ends the
    benchmark with its stderr's tail."""
    argv = sys.argv[1:] if argv is None else argv
    cmd = [python, script, "--worker", side, "--work", work, *argv]
    full_env = {**os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": str(threads), **(env or {})}  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{label or side} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
