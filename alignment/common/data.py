"""Rows from files (jsonl/json/parquet/csv), a `datasets` folder on disk, a hub id, or `builtin:`.

Rows come back as plain dicts. Errors name the file and, where one is at fault, the row.
"""

from __future__ import annotations

import json
import math
import os

from alignment.assets import worlds
from alignment.common.errors import UserError

FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")


def is_finite_number(x) -> bool:
    """A JSON number that is finite: not a bool, a string, None, NaN or an infinity."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def load_rows(path: str, split: str = "train", limit: int | None = None, key: str = "data.path") -> list[dict]:
    if not path:
        raise UserError(f"{key}: no data given")
    if path.startswith("builtin:"):
        rows = _builtin(path, split, key)
    elif os.path.isfile(path):
        rows = _file(path)
    elif os.path.isdir(path):
        rows = _dataset_folder(path, split, key)
    elif path.endswith(FILE_TYPES) or path.startswith((".", "/")) or path.count("/") > 1:
        raise UserError(f"{key}: '{path}' does not exist")
    else:
        rows = _hub(path, split, key)
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows[:limit] if limit else rows


def _builtin(path: str, split: str, key: str) -> list[dict]:

    name = path.split(":", 1)[1]
    world, _, kind = name.rpartition("-")
    if world in worlds.WORLDS and kind == "sft":
        return worlds.WORLDS[world].sft_rows(2000, seed=0 if split == "train" else 1)
    if world in worlds.WORLDS and kind == "prompts":
        return worlds.WORLDS[world].prompts(split)
    raise UserError(
        f"{key}: unknown built-in dataset '{path}' (have builtin:<world>-sft and builtin:<world>-prompts for the "
        f"worlds {', '.join(worlds.WORLDS)})"
    )


# Compressed data under a text name (`data.jsonl` that is really gzip) would otherwise be a UnicodeDecodeError.
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}


def check_text_file(path: str) -> None:
    """UserError naming `path` when a file that should be text is compressed or an archive."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            raise UserError(f"{path}: is {kind}-compressed, not plain text; decompress it first (or name it .parquet)")


def _text_lines(path: str):
    """(line number, line) of a UTF-8 text file; a UserError naming the file and line for bytes that are not UTF-8."""
    check_text_file(path)
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                yield i, raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}:{i}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})"
                ) from None


def _file(path: str) -> list[dict]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".jsonl":
        rows = []
        for i, line in _text_lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{i}: expected a JSON object per line")
            rows.append(row)
        return rows
    if ext == ".json":
        try:
            data = json.loads("".join(line for _, line in _text_lines(path)))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path}: expected a JSON list of objects")
        return data
    if ext in (".parquet", ".csv"):
        import pandas as pd

        if ext == ".csv":
            for _ in _text_lines(path):  # names the line of a non-UTF-8 byte (pandas would not)
                pass
        try:
            frame = pd.read_parquet(path) if ext == ".parquet" else pd.read_csv(path, keep_default_na=False)
        except Exception as e:  # pandas raises many types for a damaged file
            raise UserError(f"{path}: cannot read as {ext[1:]} ({str(e).splitlines()[0]})") from None
        return [_plain(r) for r in frame.to_dict(orient="records")]
    raise UserError(f"{path}: unsupported file type '{ext}' (use {', '.join(FILE_TYPES)})")


def _plain(row: dict) -> dict:
    # parquet hands back numpy arrays for list columns; the formatting code expects lists/dicts.
    out = {}
    for k, v in row.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, list):
            v = [_plain(x) if isinstance(x, dict) else x for x in v]
        out[k] = v
    return out


def _dataset_folder(path: str, split: str, key: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except FileNotFoundError:
        raise UserError(f"{key}: '{path}' is a folder but not a saved `datasets` dataset") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{path}: no split '{split}' (has {', '.join(ds)})")
        ds = ds[split]
    return [_plain(r) for r in ds]


def _hub(path: str, split: str, key: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(path, split=split)
    except Exception as e:  # offline, missing repo, bad split: all are the user's to fix
        raise UserError(f"{key}: cannot load hub dataset '{path}' split '{split}' ({str(e).splitlines()[0]})") from None
    return [_plain(r) for r in ds]


def prompt_of(row: dict, where: str):
    """A row's prompt: `prompt` (string or messages) or a `messages` conversation minus its final answers."""
    if isinstance(row.get("prompt"), (str, list)) and row["prompt"]:
        return row["prompt"]
    if isinstance(row.get("messages"), list) and row["messages"]:
        msgs = list(row["messages"])
        while msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
            msgs.pop()
        if msgs:
            return msgs
    raise UserError(f"{where}: expected a non-empty 'prompt' (string or messages) or a 'messages' column")


def load_prompts(path: str, split: str = "train", limit: int | None = None, key: str = "data.path") -> list:
    """Prompts (strings or message lists) for sampling, PPO and evaluation, with file:row errors."""
    return [prompt_of(r, f"{path}:{i + 1}") for i, r in enumerate(load_rows(path, split, limit, key=key))]
