"""What the framework-vs-TRL benchmarks share: each side in a fresh worker process, one JSON line back.

A benchmark script runs itself again with `--worker SIDE --work DIR` plus its own command line, so a worker
sees the same settings as the parent; the worker prints one JSON object as its last stdout line. Peak memory
is the worker's own peak RSS, so sides never share an allocator or imports. `machine()` is the line every
timing benchmark prints first: the same benchmark's speed ratio moves from one CPU type to another, so a figure is
read beside the CPU, its vector ISA, the cores it had and the load.
"""

from __future__ import annotations

import json
import os
import platform
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


def cpu_info(cpuinfo: str) -> tuple[str, str]:
    """(CPU model name, best vector ISA level: "AVX-512+AMX", "AVX-512", "AVX2" or "no AVX2 (<arch>)") from the text
    of /proc/cpuinfo; the first processor's "model name" and "flags" ("Features" on ARM) lines are enough."""
    model, flags = "", None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
        if model and flags is not None:
            break
    flags = flags or set()
    if "avx512f" in flags:
        isa = "AVX-512+AMX" if "amx_tile" in flags else "AVX-512"
    elif "avx2" in flags:
        isa = "AVX2"
    else:
        isa = f"no AVX2 ({platform.machine() or 'unknown arch'})"
    return model or platform.processor() or "unknown CPU", isa


def read_cpuinfo(limit: int = 1 << 16) -> str:
    """The start of /proc/cpuinfo (the first processor's block is all `cpu_info` reads), or "" where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""


def machine(threads: int | None = None) -> str:
    """One line naming what a timing ran on: CPU model, best ISA level, the logical CPUs this process may use (of the
    machine's, when fewer), the torch threads the benchmark uses (if given) and the 1-minute load average."""
    model, isa = cpu_info(read_cpuinfo())
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    cpus = f"{usable} logical CPUs available" if usable == total else f"{usable} of {total} logical CPUs available"
    parts = [model, isa, cpus]
    if threads is not None:
        parts.append(f"{threads} torch thread{'s' if threads != 1 else ''}")
    parts.append(f"load average {load_average():.2f} (1 min)")
    return "machine: " + ", ".join(parts)


PEER_TUNING = "RLHF_BENCH_PEER_TUNING"
"""`on` in the environment: the peer's worker also gets our command line's process settings (see `run_worker`)."""


def process_settings(side: str, stage: str | None = None) -> dict[str, str]:
    """The environment a side's worker adds. Ours (`ours*`) runs its stage as a library call but is timed as users
    run it, through `rlhf`: the command line's process settings (`alignment.runtime.cpu_tuning`: malloc thresholds,
    OpenMP spin count) go into its environment, where glibc and libgomp read them as `apply()` would have set them.
    The peer runs as its users run it, unless `RLHF_BENCH_PEER_TUNING=on` gives it the same settings (to tell our
    code's share of a ratio from the settings' share)."""
    from alignment.runtime import cpu_tuning

    peer_tuned = os.environ.get(PEER_TUNING, "off").strip().lower() in ("on", "1", "true", "yes")
    return cpu_tuning.environment(stage) if side.startswith("ours") or peer_tuned else {}


def run_worker(script: str, side: str, work: str, threads: int, python: str = sys.executable, argv=None,
               env: dict | None = None, cwd: str = ROOT, label: str | None = None, stage: str | None = None) -> dict:  # fmt: skip
    """Run `python script --worker side --work work *argv` (argv: this command line by default) with `threads`
    OpenMP threads, wandb off and the side's `process_settings` for `stage` (the command verb it times); returns the JSON object the worker printed last.
    A failed worker ends the benchmark with its stderr's tail."""
    argv = sys.argv[1:] if argv is None else argv
    cmd = [python, script, "--worker", side, "--work", work, *argv]
    full_env = {**process_settings(side, stage), **os.environ, "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": str(threads), **(env or {})}  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"{label or side} run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
