"""Writes on a real full disk (a small tmpfs): each library's own error becomes one OSError naming the folder,
nothing temporary is left, the file or checkpoint of before stays whole, and the write succeeds once there is room.

Skipped where a tmpfs cannot be mounted (not root, or a container without the capability)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3

import pytest
import torch

from alignment.common import files
from alignment.runtime import checkpoint


def test_each_library_reports_a_full_disk_its_own_way_and_all_become_enospc(small_disk):
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    disk = small_disk("256k")
    big = {"w": torch.zeros(256 * 1024 // 4 * 2)}  # twice the disk
    raised = {}
    for name, write in [
        ("torch.save", lambda: torch.save(big, os.path.join(disk.path, "t.bin"))),
        ("safetensors", lambda: save_file(big, os.path.join(disk.path, "t.safetensors"))),
        ("open().write", lambda: open(os.path.join(disk.path, "t.txt"), "wb").write(b"x" * 600_000)),
        ("sqlite", lambda: _fill_sqlite(os.path.join(disk.path, "t.db"))),
    ]:
        with pytest.raises(Exception) as caught:
            write()
        raised[name] = caught.value
        error = files.disk_error(caught.value, disk.path)  # judged while the half-written file still fills the disk
        assert error is not None and error.errno == errno.ENOSPC and error.filename == disk.path, (name, caught.value)
        for leftover in os.listdir(disk.path):
            files.remove(os.path.join(disk.path, leftover))
    # none of them says so the same way, and two of them lose the OS's error altogether
    assert type(raised["torch.save"]) is RuntimeError and "unexpected pos" in str(raised["torch.save"])
    assert isinstance(raised["safetensors"], SafetensorError) and not isinstance(raised["safetensors"], OSError)
    assert isinstance(raised["open().write"], OSError) and raised["open().write"].errno == errno.ENOSPC
    assert isinstance(raised["sqlite"], sqlite3.OperationalError) and "disk is full" in str(raised["sqlite"])
    assert files.disk_error(ValueError("unexpected pos in the argument"), disk.path) is None  # other errors pass
    assert files.disk_error(KeyError("x"), disk.path) is None


def _fill_sqlite(path: str) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    for _ in range(1000):
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 4096,))
        db.commit()


def test_write_atomic_and_append_lines_leave_the_old_file_whole(small_disk):
    disk = small_disk("64k")
    manifest, log = os.path.join(disk.path, "manifest.json"), os.path.join(disk.path, "metrics.jsonl")
    files.write_json(manifest, {"steps": 3})
    files.append_lines(log, ['{"step": 1}'])
    disk.fill(leave_bytes=0)
    with pytest.raises(OSError) as err:
        files.write_json(manifest, {"steps": 4, "pad": "x" * 100_000})
    assert err.value.errno == errno.ENOSPC and err.value.filename == disk.path
    with pytest.raises(OSError) as err:
        files.append_lines(log, ['{"step": 2, "pad": "' + "x" * 100_000 + '"}'])
    assert err.value.errno == errno.ENOSPC
    assert json.load(open(manifest)) == {"steps": 3} and open(log).read() == '{"step": 1}\n'  # no half line
    assert disk.leftovers() == []
    os.remove(os.path.join(disk.path, "filler"))
    files.append_lines(log, ['{"step": 2}'])
    assert open(log).read() == '{"step": 1}\n{"step": 2}\n'


def test_a_staged_save_that_does_not_fit_keeps_the_files_of_before(small_disk):
    from safetensors.torch import load_file, save_file

    disk = small_disk("512k")
    folder = os.path.join(disk.path, "run")
    with files.staged(folder) as tmp:
        save_file({"w": torch.ones(1000)}, os.path.join(tmp, "adapter_model.safetensors"))
    with pytest.raises(OSError) as err, files.staged(folder) as tmp:
        save_file({"w": torch.zeros(200_000)}, os.path.join(tmp, "adapter_model.safetensors"))  # 800 kB
    assert err.value.errno == errno.ENOSPC and err.value.filename == folder
    assert os.listdir(folder) == ["adapter_model.safetensors"] and disk.leftovers() == []
    assert torch.equal(load_file(os.path.join(folder, "adapter_model.safetensors"))["w"], torch.ones(1000))


@pytest.mark.parametrize("room, library", [(64 * 1024, "safetensors"), (400 * 1024, "torch")])
def test_a_checkpoint_that_does_not_fit_leaves_the_last_one_and_resumes_once_there_is_room(small_disk, room, library):
    """With `room` free, the model (safetensors, written first) or the optimizer (torch.save, 512 kB) is what
    fails: either way one OSError naming the checkpoints folder, no `.tmp-step-*`, and the previous checkpoint
    intact; after the disk grows, the same checkpoint is written and loads back exactly."""
    from accelerate import Accelerator
    from safetensors import SafetensorError

    disk = small_disk("2m")
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)  # 257 kB of weights, 514 kB of Adam moments
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.randn(2, 256)).sum().backward()
    optimizer.step()
    checkpoint.save(accelerator, disk.path, 1, {"run_id": "r"}, keep_last=2)
    disk.fill(leave_bytes=room)
    with pytest.raises(OSError) as err:
        checkpoint.save(accelerator, disk.path, 2, {"run_id": "r"}, keep_last=2)
    assert err.value.errno == errno.ENOSPC and err.value.filename == checkpoint.checkpoint_dir(disk.path)
    cause = err.value.__cause__
    assert isinstance(cause, SafetensorError) if library == "safetensors" else type(cause) is RuntimeError, cause
    assert sorted(os.listdir(checkpoint.checkpoint_dir(disk.path))) == ["step-1"] and disk.leftovers() == []

    disk.resize("4m")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert checkpoint.save(accelerator, disk.path, 2, {"run_id": "r"}, keep_last=2).endswith("step-2")
    with torch.no_grad():
        model.weight.zero_()
    assert checkpoint.load(accelerator, checkpoint.resolve_resume("auto", disk.path)) == {"step": 2, "run_id": "r"}
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
