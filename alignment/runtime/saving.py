"""How a training stage finishes its output folder, the same way in every stage: the merged model the next stages
load, `eval.json`, `manifest.json` (inputs named by `manifest.stage_inputs`) and the model card. Main process only."""

from __future__ import annotations

import json
import os

from alignment.common import files, manifest
from alignment.runtime import adapters, card, models


def save_merged(cfg, base_path: str, tokenizer) -> str:
    """The saved adapter merged into `base_path` as one standalone model in output_dir/merged; returns "merged"."""
    merged = os.path.join(cfg.output_dir, "merged")
    adapters.merge_to(cfg.output_dir, base_path, merged, models.resolve_dtype(cfg.model.dtype), tokenizer)
    return "merged"


def write_manifest(run, inputs: dict, outputs: dict, metrics: dict, report: dict | None = None, extra=None) -> dict:
    """`eval.json` (the held-out `report`, when there is one), then the manifest of stage `run.name` with the world
    size and training time, then, for a saved model, its card (README.md; loading lines relative to the run
    folder). The manifest comes last of the files: it says the folder is complete."""
    cfg = run.cfg
    if report:
        files.write_json(os.path.join(cfg.output_dir, "eval.json"), report)
        outputs = {**outputs, "eval": "eval.json"}
    extra = {**(extra or {}), "world_size": run.accelerator.num_processes, "train_seconds": run.train_seconds}
    data = manifest.write(cfg.output_dir, run.name, inputs=inputs, outputs=outputs, metrics=metrics, extra=extra)
    if "adapter" in outputs or "weights" in outputs:
        card.write(cfg.output_dir, json.loads(json.dumps(data, default=str)), cfg.run)
    return data
