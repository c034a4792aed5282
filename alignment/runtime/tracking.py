"""Metrics to W&B (through Accelerate's trackers) and, always, to `metrics.jsonl` in the run folder.

The same names go to both. On resume the W&B run id comes back from the checkpoint, so the curve
continues in the same run, and metrics.jsonl drops lines logged after the checkpoint by the run
that was interrupted, so the file reads as if the run had never stopped.
"""

from __future__ import annotations

import json
import os

from alignment.common import files
from alignment.common.errors import UserError
from alignment.config.shared import TrackingConfig


def new_run_id() -> str:
    import secrets

    return secrets.token_hex(4)


class Tracker:
    def __init__(self, accelerator, cfg: TrackingConfig, output_dir: str, config: dict, run_id: str, step: int = 0):
        self.accelerator = accelerator
        self.cfg = cfg
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.samples_path = os.path.join(output_dir, "samples.jsonl")
        if not accelerator.is_main_process:
            return
        os.makedirs(output_dir, exist_ok=True)
        _truncate_after(self.path, step)
        _truncate_after(self.samples_path, step)
        if cfg.wandb:
            init = {
                "name": cfg.run_name or os.path.basename(os.path.abspath(output_dir)),
                "id": run_id,
                "resume": "allow",
                "dir": output_dir,
                "tags": cfg.tags or None,
            }
            if cfg.entity:
                init["entity"] = cfg.entity
            if cfg.mode:
                init["mode"] = cfg.mode
            accelerator.init_trackers(cfg.project, config=config, init_kwargs={"wandb": init})

    def log(self, metrics: dict, step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        metrics = {k: _plain(v) for k, v in metrics.items()}
        files.append_lines(self.path, [json.dumps({"step": step, **metrics})])
        if self.cfg.wandb:
            self.accelerator.log(metrics, step=step)

    def table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        """A table of samples: a W&B Table and lines in samples.jsonl."""
        if not self.accelerator.is_main_process:
            return
        files.append_lines(
            self.samples_path,
            [json.dumps({"step": step, "table": name, **dict(zip(columns, map(_plain, row)))}) for row in rows],
        )
        if self.cfg.wandb:
            import wandb

            self.accelerator.log(
                {name: wandb.Table(columns=columns, data=[list(map(_plain, r)) for r in rows])}, step=step
            )


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return value


def _truncate_after(path: str, step: int) -> None:
    """Keep only lines with step <= `step` (starting fresh at step 0 removes the file), rewritten atomically.

    A last line torn by a crash mid-write (no newline, not JSON) is dropped: the run resumes from a
    checkpoint that precedes it anyway.
    """
    if not os.path.exists(path):
        return
    if step == 0:
        os.remove(path)
        return
    kept = [line for line, row in _rows(path) if row.get("step", 0) <= step]
    files.write_atomic(path, "".join(line if line.endswith("\n") else line + "\n" for line in kept), fsync=True)


def _rows(path: str) -> list[tuple[str, dict]]:
    """(line, parsed) of a jsonl log; a torn last line is left out, a bad line elsewhere is a UserError."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn by a crash while it was written
            raise UserError(f"{path}:{i + 1}: not valid JSON; remove or repair the line to resume") from None
        out.append((line, row if isinstance(row, dict) else {}))
    return out


def read_metrics(output_dir: str) -> list[dict]:
    return [row for _, row in _rows(os.path.join(output_dir, "metrics.jsonl"))]
