"""Resumable checkpoints: written atomically, keep-last-N, and an exact resume.

A checkpoint is Accelerate's full state (model/adapter, optimizer, scheduler, every rank's RNG,
DeepSpeed shards) plus `trainer_state.json` (step, data position, W&B run id, and whatever else the
stage needs: KL controller, running statistics). It is written to a hidden temp folder and
renamed into place only when complete, so a crash mid-write never leaves a checkpoint that looks
valid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal

from alignment.common import files
from alignment.common.errors import UserError

STATE_FILE = "trainer_state.json"
PATTERN = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def list_checkpoints(output_dir: str) -> list[str]:
    root = checkpoint_dir(output_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = PATTERN.match(name)
        if m and os.path.isfile(os.path.join(root, name, STATE_FILE)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """`auto` -> latest checkpoint or None; a path must be a complete checkpoint."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    if not os.path.isfile(os.path.join(resume, STATE_FILE)):
        raise UserError(f"checkpoint.resume: '{resume}' is not a complete checkpoint (no {STATE_FILE})")
    return resume


def save(accelerator, output_dir: str, step: int, state: dict, keep_last: int) -> str:
    """Write checkpoint `step-<step>` atomically; every rank must call this.

    A write that fails on any process (a full disk: whatever library raised it) fails the checkpoint on every
    process: the temp folder goes, the last complete checkpoint stays, and an OSError naming the checkpoints
    folder is raised everywhere (no process is left waiting at a barrier for one that gave up).
    """
    root = checkpoint_dir(output_dir)
    final = os.path.join(root, f"step-{step}")
    tmp = os.path.join(root, f".tmp-step-{step}")
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    failed: BaseException | None = None
    try:
        accelerator.save_state(tmp, safe_serialization=True)
        if accelerator.is_main_process:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({"step": step, **state}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
    except Exception as e:
        failed = e
    error = _agree(accelerator, failed, root)  # judged before the cleanup frees what the failed write took
    if error is not None:
        if accelerator.is_main_process:
            files.remove(tmp)
        raise error from failed
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    _fault_injection(step)
    return final


def _agree(accelerator, failed: BaseException | None, folder: str) -> BaseException | None:
    """What every process raises after a checkpoint write: None when all succeeded, else this process's own
    error (a failed write as an OSError naming `folder`) or, on a process that wrote its part, the other's."""
    error = None if failed is None else files.disk_error(failed, folder) or failed
    code = 0 if error is None else error.errno if isinstance(error, OSError) and error.errno else -1
    if accelerator.num_processes > 1:  # also the barrier after the write
        import torch

        codes = accelerator.gather(torch.tensor([code], device=accelerator.device)).tolist()
        code = next((c for c in codes if c > 0), min(codes))
    if error is not None or code == 0:
        return error
    if code > 0:
        return OSError(code, os.strerror(code), folder)
    return RuntimeError(f"{folder}: another process failed to write its part of the checkpoint")


def load(accelerator, path: str) -> dict:
    """Restore Accelerate's state from `path` and return the trainer state saved with it."""
    accelerator.load_state(path)
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)


def _fault_injection(step: int) -> None:
    # Tests kill a run right after a given checkpoint (as a crash or a preemption would) to prove
    # that resuming reproduces the uninterrupted run bit for bit.
    if os.environ.get("RLHF_KILL_AFTER_CHECKPOINT") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
