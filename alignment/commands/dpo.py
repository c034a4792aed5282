"""`rlhf dpo`: DPO / IPO / listwise Plackett-Luce DPO on the rankings (policy adapter)."""

from __future__ import annotations

from alignment.config.command_line import run_stage
from alignment.dpo import train
from alignment.dpo.config import DPOConfig


def main(argv: list[str]) -> int:
    return run_stage("rlhf dpo", DPOConfig, train.train, argv, train.__doc__)
