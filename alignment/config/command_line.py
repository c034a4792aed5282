"""What `rlhf <command> --help` prints: every config key in aligned columns, its value and its docstring.

The values are the config file's when one is given (`rlhf sample configs/sample.yaml --help` shows `repeats = 8`,
the YAML's), else the dataclass defaults; lists and mappings print as YAML, as they are written in a config file;
a key whose type is a `Literal` names every choice.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
import types
import typing
from typing import Any, Literal

import yaml

from alignment.config import field_docs

VALUE_WIDTH = 24
"""Widest value kept in the value column; a longer one puts its description on the next line."""


def show(value: Any) -> str:
    """A config value as it would be written in YAML: `true`, `[q_proj, v_proj]`, `{sft: runs/x/sft}`; empty for
    None and "" (no value: required, or derived from `run`)."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return str(value)


def choices(tp: Any) -> list[str]:
    """The values a `Literal` type (or an optional one) allows, as text; [] for any other type."""
    if typing.get_origin(tp) is Literal:
        return [show(a) for a in typing.get_args(tp)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [c for arg in typing.get_args(tp) for c in choices(arg)]
    return []


def rows(cls: type, values: Any = None, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, value shown, description) for every (nested) field of `cls`, values from `values` if given."""
    values = values if values is not None else cls()
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        value = getattr(values, f.name)
        if dataclasses.is_dataclass(value):
            out += rows(type(value), value, f"{prefix}{f.name}.")
            continue
        doc = docs.get(f.name, "")
        allowed = choices(hints[f.name])
        if allowed:
            doc = f"{doc} One of: {', '.join(allowed)}.".strip()
        out.append((prefix + f.name, show(value), doc))
    return out


def describe(cls: type, values: Any = None, width: int | None = None) -> list[str]:
    """Lines `key = value  description` for every key of `cls`, in aligned columns, descriptions wrapped to `width`
    (the terminal's, at least 100)."""
    table = rows(cls, values)
    width = width or max(100, shutil.get_terminal_size((120, 24)).columns)
    key_width = max(len(key) for key, _, _ in table)
    value_width = min(VALUE_WIDTH, max(len(value) for _, value, _ in table))
    doc_column = 2 + key_width + 3 + value_width + 2
    wrap = textwrap.TextWrapper(width=max(40, width - doc_column), break_on_hyphens=False, break_long_words=False)
    lines = []
    for key, value, doc in table:
        head = f"  {key:<{key_width}} = {value:<{value_width}}"
        text = wrap.wrap(doc) or [""]
        if len(value) > value_width:  # a long value keeps its line; the description starts below it, in its column
            lines.append(head.rstrip())
            lines += [" " * doc_column + t for t in text if t]
            continue
        lines.append(f"{head}  {text[0]}".rstrip())
        lines += [" " * doc_column + t for t in text[1:]]
    return lines
