"""`manifest.json`: what a stage read, what it wrote, library versions and final metrics.

`inputs` are named the same way in every stage (`stage_inputs`): `model` is the model the stage started from as it
resolved (an SFT run folder is its merged model; a local folder absolute; a hub id as given), `base` the model a saved
adapter sits on (stages that train: the same path), `data` and `eval_data` what it read, `reward` the reward it used.
No torch here: the ranking export writes one too.
"""

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
    (since the last reset: a stage that logs `memory/peak_gb` per step resets it each time). Never loads torch: a
    process without it has no GPU tensors."""
    import sys

    out = {"rss": round(peak_rss_gb(), 3)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_allocated"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return out


def where(path: str | None) -> str | None:
    """A path as a manifest records an input: absolute when it exists here (a run folder says exactly what it read,
    wherever it was run from); hub ids, `builtin:` names and URLs as given."""
    if path and os.path.exists(path):
        return os.path.abspath(path)
    return path


def stage_inputs(
    model: str | None, data: str | None = None, eval_data: str | None = None, trained: bool = False, **more: str | None
) -> dict:
    """A manifest's `inputs` by the convention above: `model`, `base` (with `trained`), `data`, `eval_data` (when the
    stage can take one) and any `more` (e.g. `reward`), each as `where` records it."""
    inputs = {"model": where(model), **({"base": where(model)} if trained else {}), "data": where(data)}
    if eval_data is not None or trained:
        inputs["eval_data"] = where(eval_data)
    return {**inputs, **{k: where(v) for k, v in more.items()}}


def write(
    output_dir: str,
    stage: str,
    inputs: dict,
    outputs: dict,
    metrics: dict,
    extra: dict | None = None,
) -> dict:
    """Write `output_dir/manifest.json` atomically; returns what was written. `extra` keys go at the top level."""
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
    return data


def read(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)
