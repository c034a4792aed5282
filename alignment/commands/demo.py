"""`rlhf demo`: the whole pipeline on the embedded tiny default, with a report."""

from __future__ import annotations

from alignment import demo
from alignment.config.command_line import run_stage


def main(argv: list[str]) -> int:
    return run_stage("rlhf demo", demo.DemoConfig, demo.demo, argv, demo.__doc__)
