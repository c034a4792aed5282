"""A stage's command line, `[CONFIG.yaml] [key=value ...] [--help]`, into its config (`parse_stage_args`), and what
`rlhf <command> --help` prints: every config key in aligned columns, its value and its docstring.

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

from alignment.common.errors import UserError
from alignment.common.functions import FUNCTION_KEYS, HELP
from alignment.config.loader import all_keys, field_docs, load_config, resolve_unchecked

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


def parse_stage_args(prog: str, cfg_cls: type, argv: list[str], doc: str = ""):
    """Parse `[CONFIG.yaml] [key=value ...] [--help]` into a validated `cfg_cls`; None after --help (which shows the
    values the config file and overrides give, when there are any)."""
    wants_help = any(a in ("-h", "--help") for a in argv)
    path = None
    rest = [a for a in argv if a not in ("-h", "--help")]
    if rest and "=" not in rest[0]:
        path = rest.pop(0)
    for item in rest:
        if "=" not in item:
            raise UserError(f"unexpected argument '{item}': give at most one CONFIG.yaml, then key=value overrides")
    if wants_help:
        values = resolve_unchecked(cfg_cls, path, rest) if path or rest else None
        print_help(prog, cfg_cls, doc, values, path, rest)
        return None
    return load_config(cfg_cls, path, rest)


def print_help(prog: str, cfg_cls: type, doc: str = "", values=None, path: str | None = None, overrides=()) -> None:
    """Usage, the command's docstring, every config key with its value and meaning, and the user-function signature
    where the command takes one."""

    print(f"usage: {prog} [CONFIG.yaml] [key=value ...]\n")
    if doc:
        print(doc.strip() + "\n")
    given = " and ".join(([path] if path else []) + (["the overrides"] if overrides else []))
    source = f"values from {given}, then the defaults" if given else "values are the defaults"
    print(f"config keys (YAML or dotted key=value overrides; {source}):")
    print("\n".join(describe(cfg_cls, values)))
    if set(all_keys(cfg_cls)) & set(FUNCTION_KEYS):
        print("\n" + HELP)


def run_stage(prog: str, cfg_cls: type, fn, argv: list[str], doc: str = "") -> int:
    """A stage's command: its command line into `cfg_cls`, then `fn(cfg)` (nothing runs after --help); exit code 0."""
    cfg = parse_stage_args(prog, cfg_cls, argv, doc)
    if cfg is not None:
        fn(cfg)
    return 0
