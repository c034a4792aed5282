"""`rlhf bon`: best-of-N: a policy's samples, the reward model's best of each N, as SFT rows."""

from __future__ import annotations

import os

from alignment import bon
from alignment.config.command_line import parse_stage_args


def main(argv: list[str]) -> int:
    cfg = parse_stage_args("rlhf bon", bon.BonConfig, argv, bon.__doc__)
    if cfg is not None:
        m = bon.rejection_sample(cfg)["metrics"]
        rows = os.path.join(cfg.output_dir, "sft.jsonl")
        print(f"best-of-{cfg.n}: {m['rows']} rows, mean reward {m['reward_mean']:.3f} -> {rows}")
        print(f"next round: rlhf sft configs/sft.yaml model.name_or_path={cfg.policy} data.path={rows} output_dir=...")
    return 0
