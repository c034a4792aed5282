"""Typed stage configs: a dataclass per stage, loaded from YAML, overridden by dotted ``key=value``.

Every field carries a one-line docstring (the string literal under it); ``rlhf <stage> --help``
prints them, so the dataclass is the one place a hyperparameter is documented.

Errors are :class:`ConfigError` (a :class:`UserError`): one line naming the key, the YAML file
and, for a misspelt key, the closest valid one. The CLI turns them into a non-zero exit.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import textwrap
import types
import typing
from typing import Any, Literal

import yaml

from alignment.common.errors import ConfigError, UserError
from alignment.config.shared import HubOptions, check_ranges

# ----------------------------------------------------------------------------------------------
# Loading


def load_config(cls: type, path: str | None = None, overrides: list[str] | None = None, label: str = "") -> Any:
    """Build `cls` from an optional YAML file and `key=value` overrides, type- and range-checked and validated.

    Every error is one line saying where the bad value came from: the YAML file (`configs/sft.yaml: ...`),
    an override (`override 'train.learning_rate=-1': ...`), prefixed by `label` when a program passed the
    overrides (`pipeline stage sft: override '...'`).
    """
    cfg, origins = _resolve(cls, path, overrides or [], label)
    return validated(cfg, origins, path, label)


def resolve_unchecked(cls: type, path: str | None = None, overrides: list[str] | None = None) -> Any:
    """`cls` from the YAML and overrides with `run` applied and every type checked, but not `validate()`d: what
    `--help` shows as the values a config file gives (a file may leave a required key to the command line)."""
    return _resolve(cls, path, overrides or [])[0]


def _resolve(cls: type, path: str | None, overrides: list[str], label: str = "") -> tuple[Any, dict[str, str]]:
    data = read_yaml(path) if path is not None else {}
    from_dict(cls, data, source=path or "config")  # the file alone: its errors name the file
    file_run = data.get("run")
    origins = apply_overrides(cls, data, overrides, label)
    rebase_run(data, file_run, origins)
    apply_run(cls, data)
    return from_dict(cls, data, source=path or "config"), origins


# ----------------------------------------------------------------------------------------------
# `run=runs/x`: one key that chains the stages. A stage config declares which of its keys live in the run
# folder (`RUN_PATHS: ClassVar = {"model.name_or_path": "sft", "output_dir": "reward"}`); with `run` set, each
# such key the YAML and the overrides leave unset becomes run/<that folder>. A folder may name another key of the
# config in braces (`"output_dir": "{algorithm}"`: runs/x/rloo for algorithm=rloo). Explicit keys always win, with
# one exception: a path the YAML file sets inside its own run folder moves with `run=` (see `rebase_run`).


def apply_run(cls: type, data: dict) -> None:
    """Fill the keys of `cls.RUN_PATHS` that `data` does not set from `data['run']` (no-op without a run)."""
    run = data.get("run")
    if not run or not isinstance(run, str):
        return
    for key, sub in getattr(cls, "RUN_PATHS", {}).items():
        if isinstance(sub, tuple):  # (folder, a key that, when set, replaces this one: reward.function)
            sub, unless = sub
            if _get_dotted(data, unless):
                continue
        if not _has_dotted(data, key):
            if isinstance(sub, dict):
                value = {k: _join(run, _fill(cls, data, v)) for k, v in sub.items()}
            else:
                value = _join(run, _fill(cls, data, sub))
            _set_dotted(data, key, value)


def rebase_run(data: dict, file_run: Any, origins: dict[str, str]) -> None:
    """When an override moves `run` away from the YAML file's own run folder, move every path the file sets inside
    that folder with it (`output_dir: runs/tiny/rloo` becomes runs/mine/rloo under run=runs/mine).

    A shipped or copied YAML that spells out a run-derived path must not pin the stage to the old run: `run=` moves
    the whole chain. Values given as overrides are the user's own and stay as given.
    """
    run = data.get("run")
    if "run" not in origins or not isinstance(file_run, str) or not file_run or not isinstance(run, str) or not run:
        return
    old = os.path.normpath(file_run)
    if old == os.path.normpath(run):
        return

    def moved(value: Any, key: str) -> Any:
        if key in origins:
            return value
        if isinstance(value, dict):
            return {k: moved(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v, key) for v in value]
        if isinstance(value, str) and value and os.path.normpath(value) == old:
            return run
        if isinstance(value, str) and os.path.normpath(value).startswith(old + os.sep):
            return os.path.join(run, os.path.relpath(os.path.normpath(value), old))
        return value

    for key in [k for k in data if k != "run"]:
        data[key] = moved(data[key], key)


def _fill(cls: type, data: dict, sub: str) -> str:
    """`sub` with `{key}` replaced by that top-level key's value in `data`, else its default in `cls`."""
    if "{" not in sub:
        return sub
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return sub.format_map({**defaults, **{k: v for k, v in data.items() if not isinstance(v, dict)}})


def _join(run: str, sub: str) -> str:
    return os.path.join(run, sub) if sub else run


def _has_dotted(data: dict, key: str) -> bool:
    """Whether the YAML or an override set `key` (to anything, null included: an explicit null wins over run=)."""
    parent, _, leaf = key.rpartition(".")
    node = _get_dotted(data, parent) if parent else data
    return isinstance(node, dict) and leaf in node


def _get_dotted(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def builtins_in(cfg: Any, prefix: str = "") -> list[str]:
    """`key=builtin:...` for every value of `cfg` (nested, dict values too) naming embedded data or a model."""
    found = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found += builtins_in(value, f"{prefix}{f.name}.")
            continue
        items = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in items:
            if isinstance(v, str) and v.startswith("builtin:"):
                found.append(f"{prefix}{f.name}{'.' + sub if sub else ''}={v}")
    return found


def apply_overrides(cls: type, data: dict, overrides: list[str], label: str = "") -> dict[str, str]:
    """Set each `key=value` of `overrides` into `data` (nested dicts), each value type-checked alone so its error
    names the override; returns dotted key -> where it came from (for `validated`)."""
    origins: dict[str, str] = {}
    hints = _dotted_hints(cls)
    for item in overrides:
        where = f"{label + ': ' if label else ''}override '{item}'"
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{where} is not of the form key=value")
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{key}'{_suggest(key, cls)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _coerce(hints[key], value, key, where)  # checked alone, so its error names the override
        _set_dotted(data, key, value)
        origins[key] = where
    return origins


def validated(cfg: Any, origins: dict[str, str], path: str | None, label: str = "") -> Any:
    """`cfg` after its ranges and `validate()`, or a ConfigError saying where the failing value came from."""
    try:
        check_ranges(cfg)
        if isinstance(cfg, HubOptions):
            cfg.validate_hub()
        if hasattr(cfg, "validate"):
            cfg.validate()
    except ConfigError as e:
        where = _origin(e.key, origins, path) or (label if not path else "")
        raise ConfigError(f"{where}: {e}" if where else str(e), e.key) from None
    return cfg


def read_yaml(path: str) -> dict:
    """A YAML config file as a mapping, or a ConfigError naming the file (and line)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def _origin(key: str | None, origins: dict[str, str], path: str | None) -> str:
    """Where the value of dotted `key` came from: its override, else the YAML file (when it sets it or when the
    failing check names no key)."""
    if key is None:
        return path or ""
    for k in (key, *[key.rsplit(".", i)[0] for i in range(1, key.count(".") + 1)]):
        if k in origins:
            return origins[k]
    return path or ""


def _dotted_hints(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of a (nested) config dataclass -> its type."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out[prefix + f.name] = hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_dotted_hints(hints[f.name], f"{prefix}{f.name}."))
    return out


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def from_dict(cls: type, data: dict, source: str = "config", prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a plain dict, checking names and types recursively."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{dotted}'{_suggest(str(key), cls, prefix)}")
        kwargs[key] = _coerce(hints[key], value, dotted, source)
    return cls(**kwargs)


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a (nested) config dataclass, sections included."""
    return list(_dotted_hints(cls, prefix))


def _suggest(key: str, cls: type, prefix: str = "") -> str:
    """`; did you mean 'train.learning_rate'?` by spelling, initials (lr) or the same leaf in another section."""
    keys = [prefix + k for k in all_keys(cls)]
    full = prefix + key
    leaf = full.rsplit(".", 1)[-1]

    def last(name: str) -> str:
        return name.rsplit(".", 1)[-1]

    def initials(name: str) -> str:
        return "".join(w[0] for w in last(name).split("_") if w)

    found = (
        [k for k in keys if last(k) == leaf]
        or [k for k in keys if len(leaf) > 1 and initials(k) == leaf]
        or difflib.get_close_matches(full, keys, n=1, cutoff=0.6)
        or [k for k in keys if last(k) in difflib.get_close_matches(leaf, [last(k) for k in keys], n=1, cutoff=0.75)]
    )
    if found:
        return f"; did you mean '{found[0]}'?"
    return f"; valid keys here: {', '.join(f.name for f in dataclasses.fields(cls))}"


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    """`value` as type `tp` (a dataclass, union, Literal, list, dict or scalar), or a ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _bad(f"a mapping of {tp.__name__} keys", value, key, source)
        return from_dict(tp, value, source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(typing.get_args(tp), value, key, source)
    if origin is Literal:
        return _coerce_literal(typing.get_args(tp), value, key, source)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _bad("a list", value, key, source)
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return [_coerce(inner, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _bad("a mapping", value, key, source)
        return dict(value)
    scalar = _SCALARS.get(tp)
    return value if scalar is None else scalar(value, key, source)  # Any and unknown types pass through


def _bad(expected: str, value: Any, key: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: '{key}' must be {expected}, got {value!r}")


def _coerce_union(args: tuple, value: Any, key: str, source: str) -> Any:
    """The first member of the union that takes `value` (None only where the union allows it)."""
    if value is None and type(None) in args:
        return None
    if isinstance(value, str) and str in args and "," not in value:
        return value  # `list[str] | str`: "all-linear" is one name, not a list of one (a comma list still splits)
    for arg in (a for a in args if a is not type(None)):
        try:
            return _coerce(arg, value, key, source)
        except ConfigError:
            continue
    raise _bad(" or ".join(_type_name(a) for a in args), value, key, source)


def _coerce_literal(args: tuple, value: Any, key: str, source: str) -> Any:
    if value not in args:
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.4)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: '{key}' must be one of {', '.join(map(str, args))}, got {value!r}{hint}")
    return value


def _to_bool(value: Any, key: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise _bad("true or false", value, key, source)


def _to_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad("an integer", value, key, source)
    try:
        as_float = float(value)
        whole = int(as_float)
    except (ValueError, OverflowError):  # not a number, nan, inf
        raise _bad("an integer", value, key, source) from None
    if as_float != whole:
        raise _bad("an integer", value, key, source)
    return whole


def _to_float(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool):
        raise _bad("a number", value, key, source)
    try:
        return float(value)  # YAML reads `1e-4` (no dot) as a string; accept it as a number
    except (TypeError, ValueError):
        raise _bad("a number", value, key, source) from None


def _to_str(value: Any, key: str, source: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise _bad("a string", value, key, source)
    return str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


OUTPUT_DIRS: list[str] = []
"""Output folders this process checked (the last is named when the OS reports a failed write without a path)."""


def check_output_dir(path: str, key: str = "output_dir") -> None:
    """UserError unless `path` is a folder or can become one (no file in the way, at it or above it)."""
    OUTPUT_DIRS.append(path)
    node = os.path.abspath(path)
    while node and not os.path.exists(node):
        node = os.path.dirname(node)
    if node and not os.path.isdir(node):
        what = "is a file" if node == os.path.abspath(path) else f"is inside '{node}', which is a file"
        raise UserError(f"{key}: '{path}' {what}, not a folder")


def save_config(cfg: Any, path: str) -> None:
    """Write the resolved config as YAML (what the run actually used), atomically."""
    from alignment.common import files

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.write_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------------------------
# Field docstrings: what --help prints beside each key (alignment/usage.py)


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass (cleanrl-style attribute docstrings), inherited ones too."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return {**docs, **_own_field_docs(cls)}


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
