"""User functions named in configs as `package.module:function` (judges, reward functions, annotators' scores)."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable

from alignment.config import ConfigError, UserError


def load_function(spec: str, key: str) -> Callable:
    """The callable named by `module:function` (or `module:object.attribute`), or a one-line ConfigError naming `key`."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ConfigError(f"{key}: '{spec}' is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}: cannot import '{module_name}' ({e})") from None
    fn = module
    for part in name.split("."):  # `module:object.method` names a bound method (e.g. a world's gold)
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(f"{key}: '{module_name}' has no function '{name}'")
    return fn


def load_scorer(spec: str, key: str) -> Callable[[str, object], float]:
    """`score(completion, prompt) -> float` from a function of (completion) or (completion, prompt).

    The result is checked: a number, and finite, or a one-line UserError naming `key`.
    """
    fn = load_function(spec, key)
    try:
        takes_prompt = len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):  # builtins without a signature: completion only
        takes_prompt = False

    def score(completion: str, prompt=None) -> float:
        value = fn(completion, prompt) if takes_prompt else fn(completion)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{key}: {spec} must return a number, got {type(value).__name__}") from None
        if not math.isfinite(value):
            raise UserError(f"{key}: {spec} returned {value} for {completion!r}")
        return value

    return score
