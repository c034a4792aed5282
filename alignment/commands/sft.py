"""`rlhf sft`: supervised fine-tuning (stage 1)."""

from __future__ import annotations

from alignment import sft
from alignment.config.command_line import run_stage


def main(argv: list[str]) -> int:
    return run_stage("rlhf sft", sft.SFTConfig, sft.train, argv, sft.__doc__)
