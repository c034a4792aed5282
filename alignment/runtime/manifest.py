"""`manifest.json`: what a stage read, what it wrote, library versions and final metrics."""

from __future__ import annotations

import json
import os
import platform
import time


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("rlhf-align", "torch", "transformers", "peft", "trl", "accelerate", "deepspeed", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def where(path: str | None) -> str | None:
    """A path as a manifest records an input: absolute when it exists here (a run folder says exactly what it read,
    wherever it was run from); hub ids, `builtin:` names and URLs as given."""
    if path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def write(output_dir: str, stage: str, inputs: dict, outputs: dict, metrics: dict, extra: dict | None = None) -> dict:
    """Write `output_dir/manifest.json` atomically; returns what was written. `extra` keys go at the top level."""
    path = os.path.join(output_dir, "manifest.json")
    data = {
        "stage": stage,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "outputs": outputs,
        "metrics": metrics,
        "versions": versions(),
        **(extra or {}),
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)
    if "adapter" in outputs or "weights" in outputs:  # a trained model: its README is a model card
        from alignment.runtime import card

        card.write(output_dir, json.loads(json.dumps(data, default=str)))
    return data


def read(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)
