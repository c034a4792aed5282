"""Files a stage writes whole or not at all: a crash (or a full disk) leaves the old file or none, never half."""

from __future__ import annotations

import json
import os


def write_atomic(path: str, text: str, fsync: bool = False) -> None:
    """Write `text` to `path` through a temporary file beside it and a rename (atomic on POSIX).

    `fsync` forces the bytes to disk before the rename, for files a resume reads back after a kill.
    """
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str, data, **dump_options) -> None:
    """`data` as indented JSON at `path`, atomically (dump_options go to json.dumps, e.g. default=str)."""
    write_atomic(path, json.dumps(data, **{"indent": 1, **dump_options}))
