"""Process-wide settings for CPU speed and memory, in one place, made only by the command line.

`rlhf ...` and `python -m alignment ...` (what `accelerate launch` runs) call `apply()` first thing, before torch
loads. Importing `alignment` or `reward`, or calling a stage as a library function, changes none of them: a library
must not change its host's environment or allocator. Each setting is below with the reason it is kept; a value the
user's environment already holds wins, and `RLHF_CPU_TUNING=off` leaves all of them alone.

- `GOMP_SPINCOUNT=10000` (environment, read once by GNU OpenMP when torch loads it). PyTorch's CPU threads spin
  300,000 times at every barrier before sleeping. When another process holds one of the cores, a spinning thread
  burns its time slice waiting for a partner that is not running: on 2 cores with one busy, PPO on the demo's tiny
  model took over 120 s instead of 7 s. 10,000 spins kept the idle-machine speed (7.2 vs 7.0 s) and took 13 s with
  the core busy. The rule: it only matters where threads share cores with other work, and costs nothing elsewhere.
- glibc malloc thresholds (`mallopt`; glibc only: elsewhere nothing is set). glibc raises its mmap threshold each
  time a mapped block is freed (up to 32 MB), so from the first backward pass on, CPU activations and gradients of
  a few MB come from the heap, which fragments and keeps what is freed. A fixed threshold maps every larger block
  on its own (freed at once, but faulted in again at each use); where to put it is a trade of memory for speed that
  differs by stage, measured on 2 cores of an Intel Xeon (AVX-512) on 2026-12-06 with the benchmarks' settings:
  - `ppo` (PPO, RLOO, GRPO): 1 MiB. PPO's heap fragments: 1,001 MB peak at 0.51 episodes/s, against 1,509 MB at
    2 MiB (0.51/s), 1,431 MB at 4 MiB (0.66/s) and 1.71 GB with glibc's own threshold.
  - every other stage: 4 MiB. SFT's activations of a few MB then come from the heap: 14.9 s a run against 22.4 s
    at 1 MiB (12.7-14.3 s with glibc's own); DPO's peak at Qwen2.5's vocabulary is its 16 MiB logit chunks,
    mapped either way: 625 MB at 1 or 4 MiB, 713 MB at 16 MiB, 1,057 MB with glibc's own.
  Fixing the mmap threshold also fixes the trim threshold, at 128 KB by default, which would return and refault
  the heap's top on every step of a small model; 64 MB keeps that rare. `MALLOC_MMAP_THRESHOLD_` /
  `MALLOC_TRIM_THRESHOLD_` in the environment win (glibc reads them itself).
- Threads: not set. torch's default (one per core) decides, or `OMP_NUM_THREADS`; a benchmark names its own.

Sampling's few-row linear layers are not a process setting: `runtime/generation.py` decides them per model and
call, from a measurement on the running machine.
"""

from __future__ import annotations

import os

SWITCH = "RLHF_CPU_TUNING"
"""`off` (or 0, false, no) in the environment: `apply` changes nothing."""
GOMP_SPINCOUNT = "10000"
MMAP_THRESHOLD = 4 << 20
"""Bytes from which glibc maps a block on its own, so freeing it hands the memory back to the OS at once."""
MMAP_THRESHOLD_BY_STAGE = {"ppo": 1 << 20}
"""Stages (command verbs) whose threshold differs (see above)."""
TRIM_THRESHOLD = 64 << 20
"""Free bytes at the heap's top that glibc keeps before giving them back."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt's option numbers (malloc.h)."""
MALLOC_OPTIONS = {"MALLOC_MMAP_THRESHOLD_": M_MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": M_TRIM_THRESHOLD}
"""glibc's environment variables and the mallopt options they stand for."""


def enabled(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


def mmap_threshold(stage: str | None) -> int:
    """glibc's mmap threshold for a stage (its command verb; None: the default)."""
    return MMAP_THRESHOLD_BY_STAGE.get(stage or "", MMAP_THRESHOLD)


def apply(stage: str | None = None) -> dict[str, str]:
    """Make every setting above that the environment leaves open, for `stage` (the command's verb); returns what
    was set (name -> value). Call it before torch is imported: libgomp reads its variables when torch loads it."""
    made = {}
    for name, value in environment(stage).items():
        if name in os.environ:  # the user's own value wins
            continue
        if name in MALLOC_OPTIONS:  # glibc read its environment at start: set in the running allocator
            if set_malloc_option(MALLOC_OPTIONS[name], int(value)):
                made[name] = value
        else:
            os.environ[name] = made[name] = value
    return made


def environment(stage: str | None = None) -> dict[str, str]:
    """The settings above as environment variables for a child process (glibc reads `MALLOC_*_` at start, libgomp
    `GOMP_SPINCOUNT` when torch loads it): what `apply()` would make there, for a benchmark's worker that runs a stage
    as a library call but should run it as `rlhf` does. Empty when `RLHF_CPU_TUNING` is off."""
    if not enabled():
        return {}
    return {
        "GOMP_SPINCOUNT": GOMP_SPINCOUNT,
        "MALLOC_MMAP_THRESHOLD_": str(mmap_threshold(stage)),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }


def set_malloc_option(option: int, value: int) -> bool:
    """glibc's `mallopt(option, value)`; False where there is no glibc (macOS, musl) or it refuses."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(option, value))
