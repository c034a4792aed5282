"""`rlhf reward`: train the reward model on rankings (stage 3)."""

from __future__ import annotations

from alignment.config.command_line import run_stage
from reward import train


def main(argv: list[str]) -> int:
    return run_stage("rlhf reward", train.RewardConfig, train.train, argv, train.__doc__)
