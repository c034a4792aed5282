"""`rlhf eval`: compare policies: reward, win rate, KL, length, health."""

from __future__ import annotations

from alignment import evaluate
from alignment.config.command_line import run_stage


def main(argv: list[str]) -> int:
    return run_stage("rlhf eval", evaluate.EvalConfig, evaluate.evaluate, argv, evaluate.__doc__)
