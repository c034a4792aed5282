"""`rlhf sample`: sample K completions per prompt into the ranking store (stage 2)."""

from __future__ import annotations

from alignment.config.command_line import run_stage
from reward.rankings import sampling


def main(argv: list[str]) -> int:
    return run_stage("rlhf sample", sampling.SampleConfig, sampling.sample, argv, sampling.__doc__)
