"""Files a stage writes whole or not at all: a crash (or a full disk) leaves the old file or none, never half.

Every write path goes through here: `write_atomic`/`write_json` (one file, temp + rename), `append_lines`
(logs: a line is added whole or not at all), `staged` (what a library writes into a folder: adapters,
tokenizers, merged models) and `writing` (any other write, e.g. a checkpoint's temp folder). A failed write
leaves nothing temporary behind and is raised as an `OSError` naming the folder, whatever library raised it:
`disk_error` recognises the ways torch, safetensors and SQLite report a full disk, so the CLI can say so in
one line.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})
"""OS errors of a write the user fixes outside the program: space, quota, a read-only mount, permissions, the disk."""

FULL_BELOW_BYTES = 1 << 20
"""Free space under which a write that failed without saying why is taken for a full disk."""

# How libraries report a failed write when they do not raise the OS's own error.
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno|\[errno)\s*(\d+)", re.IGNORECASE)
_TEXTS = (
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("read-only file system", errno.EROFS),
    ("database or disk is full", errno.ENOSPC),  # SQLite's SQLITE_FULL
    ("could not extend file", errno.ENOSPC),  # PostgreSQL's disk_full
)
# torch's zip writer checks its position after each record and loses the errno of the write that fell short.
_LOST_ERRNO = ("unexpected pos", "pytorchstreamwriter failed", "file write failed", "disk i/o error")


def disk_error(e: BaseException, folder: str | None) -> OSError | None:
    """The OSError that `e` means when it is a failed write (full disk, quota, read-only, permissions, I/O),
    naming `folder` (or the file the OS named, without a folder); None when `e` is anything else.

    Call it before removing what the failed write left: a write that lost its errno is judged by the free space
    left, and the half-written files are what filled the disk.
    """
    if isinstance(e, OSError) and e.errno is not None:
        if e.errno not in WRITE_ERRNOS:
            return None
        return OSError(e.errno, os.strerror(e.errno), folder or e.filename)
    if not isinstance(e, _library_errors()):
        return None
    text = " ".join(str(e).split()).lower()
    code = _errno_named(text)
    if code is None and any(words in text for words in _LOST_ERRNO):
        code = errno.ENOSPC if folder and free_bytes(folder) < FULL_BELOW_BYTES else errno.EIO
    if code is None:
        return None
    return OSError(code, os.strerror(code), folder)


def _library_errors() -> tuple[type, ...]:
    """The exception types that report a failed write in words: torch's RuntimeError, safetensors'
    SafetensorError (neither an OSError nor a RuntimeError), SQLite's and PostgreSQL's errors."""
    import sqlite3

    kinds: list[type] = [RuntimeError, sqlite3.Error]
    for module, name in (("safetensors", "SafetensorError"), ("sqlalchemy.exc", "DBAPIError"), ("psycopg", "Error")):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(kinds)


def _errno_named(text: str) -> int | None:
    found = _ERRNO_IN_TEXT.search(text)
    if found and int(found.group(1)) in WRITE_ERRNOS:
        return int(found.group(1))
    return next((code for words, code in _TEXTS if words in text), None)


def free_bytes(path: str) -> int:
    """Bytes free to this user on the file system holding `path` (or its nearest existing folder above)."""
    node = os.path.abspath(path)
    while not os.path.exists(node) and os.path.dirname(node) != node:
        node = os.path.dirname(node)
    try:
        return shutil.disk_usage(node).free
    except OSError:
        return 0


def remove(path: str) -> None:
    """Remove a file or folder if it is there (cleanup after a failed write: never raises)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


@contextmanager
def writing(folder: str, *temporary: str) -> Iterator[None]:
    """Run a write into `folder`. If it fails, the `temporary` paths (half-written files or folders) are
    removed, and a failed write (`disk_error`) is raised as an OSError naming `folder`; other errors as they are."""
    try:
        yield
    except BaseException as e:
        error = disk_error(e, folder)  # judged before the cleanup frees the space the failed write took
        for path in temporary:
            remove(path)
        if error is None:
            raise
        raise error from e


@contextmanager
def staged(folder: str) -> Iterator[str]:
    """A hidden temp folder inside `folder` to write into (e.g. `save_pretrained(tmp)`); when the block ends,
    what it holds is renamed into `folder`, each file replacing the one of that name (a reader sees an old file
    or a new one, never half of one) and each folder the one of that name. On failure the temp folder goes and
    a failed write is raised as an OSError naming `folder` (see `writing`)."""
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-save-{secrets.token_hex(4)}")
    with writing(folder, tmp):
        os.makedirs(tmp)
        yield tmp
        for name in os.listdir(tmp):
            source, target = os.path.join(tmp, name), os.path.join(folder, name)
            if os.path.isdir(source) and os.path.isdir(target):
                shutil.rmtree(target)  # a dataset folder of an earlier export: its shards must not mix with these
            os.replace(source, target)
        os.rmdir(tmp)


def write_atomic(path: str, text: str, fsync: bool = False) -> None:
    """Write `text` to `path` through a temporary file beside it and a rename (atomic on POSIX).

    `fsync` forces the bytes to disk before the rename, for files a resume reads back after a kill.
    """
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{secrets.token_hex(4)}")
    with writing(folder, tmp):
        with open(tmp, "w") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)


def write_json(path: str, data, **dump_options) -> None:
    """`data` as indented JSON at `path`, atomically (dump_options go to json.dumps, e.g. default=str)."""
    write_atomic(path, json.dumps(data, **{"indent": 1, **dump_options}))


def append_lines(path: str, lines: list[str]) -> None:
    """Append `lines` (each gets its newline) to a log file whole or not at all: a write that fails (a full disk)
    is cut back off, so the file never ends in half a line, and raised as an OSError naming the folder."""
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        with writing(os.path.dirname(path) or "."):
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            except BaseException:
                os.ftruncate(fd, size)
                raise
    finally:
        os.close(fd)
