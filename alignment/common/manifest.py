"""`manifest.json`: what a stage read, what it wrote, library versions and final metrics."""

from __future__ import annotations

import json
import os
import platform
import time

from alignment.common import files


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("rlhf-align", "torch", "transformers", "peft", "trl", "accelerate", "deepspeed", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GB (1e9 bytes; getrusage, which cannot be reset)."""
    import resource
    import sys

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9


def peak_memory_gb() -> dict:
    """The writing process's peak memory (GB): RSS over the whole stage and, on a GPU, allocated tensors
    (since the last reset: a stage that logs `memory/peak_gb` per step resets it each time)."""
    import torch

    out = {"rss": round(peak_rss_gb(), 3)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_allocated"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return out


def where(path: str | None) -> str | None:
    """A path as a manifest records an input: absolute when it exists here (a run folder says exactly what it read,
    wherever it was run from); hub ids, `builtin:` names and URLs as given."""
    if path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def write(
    output_dir: str,
    stage: str,
    inputs: dict,
    outputs: dict,
    metrics: dict,
    extra: dict | None = None,
    run: str | None = None,
) -> dict:
    """Write `output_dir/manifest.json` atomically; returns what was written. `extra` keys go at the top level. A
    trained model also gets its card (README.md), whose loading lines are relative to the run folder `run`."""
    path = os.path.join(output_dir, "manifest.json")
    data = {
        "stage": stage,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "outputs": outputs,
        "metrics": metrics,
        "versions": versions(),
        "peak_memory_gb": peak_memory_gb(),
        **(extra or {}),
    }
    files.write_json(path, data, default=str)
    if "adapter" in outputs or "weights" in outputs:  # a trained model: its README is a model card
        from alignment.runtime import card

        card.write(output_dir, json.loads(json.dumps(data, default=str)), run)
    return data


def read(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)
