"""`rlhf pipeline`: run every stage in order from one config."""

from __future__ import annotations

from alignment import pipeline
from alignment.config.command_line import run_stage


def main(argv: list[str]) -> int:
    return run_stage("rlhf pipeline", pipeline.PipelineConfig, pipeline.run, argv, pipeline.__doc__)
