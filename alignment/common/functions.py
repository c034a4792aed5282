"""User functions named in configs as `module:function`: one convention for every one of them.

Per item: a scripted annotator's `score` (`rlhf rank annotate score=`, the pipeline's `annotators.score`) and
`rlhf eval`'s `judge`:

    def score(prompt: str, completion: str) -> float: ...          # higher = better

Per batch: PPO's `reward.function` and `reward.monitor` (TRL's reward-function convention):

    def reward(prompts: list[str], completions: list[str], **kwargs) -> list[float]: ...   # one per completion

Prompt first, as in TRL. The arguments are passed by NAME (`prompt=`, `completion=`; `prompts=`, `completions=`),
as TRL passes them, so what a function gets is decided by its parameter names, never by their order. A function may
leave the prompt out (`def score(completion)`) or take `**kwargs`; parameters with other names must have defaults.
`prompt` is text: PPO and eval pass a chat prompt as the model saw it (through its chat template); the ranking app,
which has no tokenizer, passes its messages' contents separated by blank lines.

Checked when the config loads, before anything trains: the module imports (from the installed packages or the
working directory, so `rlhf ... score=mymodule:fn` finds ./mymodule.py as `python -m` would), the parameters are
named as above, and a probe call on a known prompt and completion returns a finite number (per item) or one finite
number per completion (per batch). Anything else is one line naming the config key.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterator

from alignment.common.errors import ConfigError, UserError

ITEM = ("prompt", "completion")
"""Parameter names of a per-item function (score, judge)."""
BATCH = ("prompts", "completions")
"""Parameter names of a per-batch function (reward.function, reward.monitor)."""
SIGNATURES = {
    ITEM: "f(prompt: str, completion: str) -> float",
    BATCH: "f(prompts: list[str], completions: list[str]) -> list[float]",
}
FUNCTION_KEYS = ("score", "judge", "annotators.score", "reward.function", "reward.monitor")
"""Config keys that name a user function (their commands' --help prints HELP)."""
HELP = """user functions (module:function; the module comes from the installed packages or the working directory):
  per item   (score, annotators.score, judge):  f(prompt: str, completion: str) -> float, higher = better
  per batch  (reward.function, reward.monitor): f(prompts: list[str], completions: list[str]) -> list[float]
  Arguments are passed by name, so parameters must be named so (the prompt may be left out; **kwargs is allowed).
  Checked when the config loads: a probe call must return finite numbers, or the command stops with one line."""
PROBE = ("Write a short review of the cafe.", " The coffee was great and the staff were kind.")
"""A known prompt and completion every function is called on once when its config loads."""


@contextlib.contextmanager
def working_directory_importable() -> Iterator[None]:
    """The working directory on the import path while a user module loads (after everything installed, so it
    never shadows a package), as `python -m` has it; console scripts such as `rlhf` do not put it there."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_function(spec: str, key: str) -> Callable:
    """The callable named by `module:function` (or `module:object.attribute`), or a one-line ConfigError naming `key`."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ConfigError(f"{key}: '{spec}' is not of the form package.module:function", key=key)
    try:
        with working_directory_importable():
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}: cannot import '{module_name}' ({e})", key=key) from None
    except Exception as e:  # the user's module failed while importing: still their input, still one line
        what = f"{type(e).__name__}: {_first_line(e)}"
        raise ConfigError(f"{key}: importing '{module_name}' raised {what}", key=key) from None
    fn = module
    for part in name.split("."):  # `module:object.method` names a bound method (e.g. a world's gold)
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(f"{key}: '{module_name}' has no function '{name}'", key=key)
    return fn


def accepted_names(fn: Callable, spec: str, key: str, names: tuple[str, str]) -> tuple[str, ...]:
    """Which of `names` (prompt, completion or their plurals) `fn` takes by name; a ConfigError naming `key` when
    it cannot take the completion that way or requires a parameter by another name."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        params = None
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if params is not None:
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        own = {p.name for p in params if p.kind in by_name}
        other = [p.name for p in params if p.default is p.empty and p.name not in names and p.kind in by_name]
        positional_only = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY]
        if (names[1] in own or var_kw) and not other and not positional_only:
            return tuple(n for n in names if n in own or var_kw)
    shown = f"({', '.join(p.name for p in params)})" if params is not None else "(no signature)"
    raise ConfigError(
        f"{key}: {spec}{shown} must be {SIGNATURES[names]}, its arguments passed by name "
        f"({names[0]}=..., {names[1]}=...): name its parameters so (see `rlhf <command> --help`)",
        key=key,
    )


def load_item_function(spec: str, key: str) -> Callable[[str, str], float]:
    """`score(prompt, completion) -> float` from a per-item user function, checked now by a probe call; every later
    result is checked too (a finite number, or a one-line UserError naming `key`)."""
    fn = load_function(spec, key)
    takes = accepted_names(fn, spec, key, ITEM)

    def score(prompt: str, completion: str) -> float:
        args = dict(zip(ITEM, (prompt, completion)))
        value = _called(fn, spec, key, {n: args[n] for n in takes})
        return _finite(value, spec, key, completion)

    _probe(lambda: score(*PROBE), key)
    return score


def load_batch_function(spec: str, key: str) -> Callable[[list[str], list[str]], list[float]]:
    """`reward(prompts, completions) -> list[float]` from a per-batch user function, checked now by a probe call;
    every later result is checked too (one finite number per completion, or a one-line UserError naming `key`)."""
    fn = load_function(spec, key)
    takes = accepted_names(fn, spec, key, BATCH)

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        args = dict(zip(BATCH, (list(prompts), list(completions))))
        out = _called(fn, spec, key, {n: args[n] for n in takes})
        if isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
            raise UserError(f"{key}: {spec} must return a list of numbers, got {type(out).__name__}")
        if len(out) != len(completions):
            raise UserError(f"{key}: {spec} returned {len(out)} scores for {len(completions)} completions")
        return [_finite(v, spec, key, c) for v, c in zip(out, completions)]

    _probe(lambda: reward([PROBE[0]] * 2, [PROBE[1], " It was bad."]), key)
    return reward


def check_function(spec: str | None, key: str, batch: bool = False) -> None:
    """What a config's `validate` calls: load and probe the function `spec` names (nothing when unset)."""
    if spec:
        (load_batch_function if batch else load_item_function)(spec, key)


def _called(fn: Callable, spec: str, key: str, kwargs: dict):
    """`fn(**kwargs)`; an exception the user's function raises becomes one line naming `key`."""
    try:
        return fn(**kwargs)
    except Exception as e:
        raise UserError(f"{key}: {spec} raised {type(e).__name__}: {_first_line(e)}") from None


def _finite(value, spec: str, key: str, completion) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}: {spec} must return a number, got {type(value).__name__}") from None
    if not math.isfinite(number):
        raise UserError(f"{key}: {spec} returned {number} for {str(completion)[:60]!r}")
    return number


def _probe(call: Callable, key: str) -> None:
    """Run the probe call: any failure is a ConfigError naming `key` (so the loader says where the key was set)."""
    try:
        call()
    except UserError as e:
        raise ConfigError(f"{e} (on a probe call when the config loaded)", key=key) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "(no message)"
