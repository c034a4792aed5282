"""Resumable checkpoints: written atomically, keep-last-N, and an exact resume.

A checkpoint is Accelerate's full state (model/adapter, optimizer, scheduler, every rank's RNG,
DeepSpeed shards) plus `trainer_state.json` (step, data position, W&B run id, and whatever else the
stage needs: KL controller, running statistics). It is written to a hidden temp folder and
renamed into place only when complete, so a crash mid-write never leaves a checkpoint that looks
valid.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal

from alignment.config import UserError

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
    """Write checkpoint `step-<step>` atomically; every rank must call this."""
    root = checkpoint_dir(output_dir)
    final = os.path.join(root, f"step-{step}")
    tmp = os.path.join(root, f".tmp-step-{step}")
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(tmp, safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({"step": step, **state}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        # A full disk mid-write: the half-written temp folder goes, the last complete checkpoint stays.
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(e, root) from None
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    _fault_injection(step)
    return final


def write_error(e: Exception, folder: str) -> Exception:
    """An OSError naming `folder` for a failed write (torch and safetensors wrap the OS's error in a
    RuntimeError whose text never says the disk is full), or `e` itself when it is not a write failure."""
    if isinstance(e, OSError):
        return e if e.filename else OSError(e.errno, e.strerror, folder)
    text = str(e).lower()
    if not any(word in text for word in ("write", "space", "read-only", "permission")):
        return e
    try:
        full = shutil.disk_usage(folder if os.path.isdir(folder) else os.path.dirname(folder) or ".").free < 2**20
    except OSError:
        full = False
    code = errno.ENOSPC if full or "space" in text else errno.EROFS if "read-only" in text else errno.EIO
    return OSError(code, os.strerror(code), folder)


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
