"""`rlhf ppo`: PPO, RLOO or GRPO against the reward model on one frozen base (stage 4)."""

from __future__ import annotations

from alignment.config.command_line import run_stage
from alignment.ppo import train
from alignment.ppo.config import PPOConfig


def main(argv: list[str]) -> int:
    return run_stage("rlhf ppo", PPOConfig, train.train, argv, train.__doc__)
