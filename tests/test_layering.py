"""The package layout is the architecture: the layers of the README's code map, held here.

    commands     alignment/cli.py, __main__.py, commands/<verb>.py        rlhf <verb>
    pipeline     alignment/pipeline.py, demo.py, report.py, human_eval.py
    stages       sft | dpo | ppo | eval (evaluate, bon) | reward (reward/train.py) | sample (rankings/sampling, active)
    preference   reward/ model, losses, data, uncertainty, acquisition
    runtime      alignment/runtime/                  |  rankings   reward/preference.py, reward/rankings/ (no torch)
    config       alignment/config/
    common       alignment/common/, alignment/assets/

A module imports only its own layer and the layers its layer is drawn on (`MAY_IMPORT`); no stage imports
another; the ranking product imports no torch, transformers or runtime, not even through another module. Read from
the source with `ast` (every import, at module top or inside a function, relative ones resolved), so a lazy import
cannot hide a dependency. Every module belongs to exactly one layer, and every layer's folders exist: a module that
moves without its rule fails here instead of being skipped.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYERS = {
    "common": ("alignment.common", "alignment.assets"),
    "config": ("alignment.config",),
    "runtime": ("alignment.runtime",),
    "rankings": ("reward.preference", "reward.rankings"),
    "preference": ("reward.model", "reward.losses", "reward.data", "reward.uncertainty", "reward.acquisition"),
    "stages": (
        "alignment.sft",
        "alignment.dpo",
        "alignment.ppo",
        "alignment.evaluate",
        "alignment.bon",
        "reward.train",
        "reward.rankings.sampling",
        "reward.rankings.active",
    ),
    "pipeline": ("alignment.pipeline", "alignment.demo", "alignment.report", "alignment.human_eval"),
    "commands": ("alignment.commands", "alignment.cli", "alignment.__main__"),
}
"""Layer -> the modules (dotted prefixes) in it; the longest prefix decides (reward.rankings.sampling is a stage)."""

MAY_IMPORT = {
    "common": {"common"},
    "config": {"common", "config"},
    "runtime": {"common", "config", "runtime"},
    "rankings": {"common", "config", "rankings"},
    "preference": {"common", "config", "runtime", "rankings", "preference"},
    "stages": {"common", "config", "runtime", "rankings", "preference", "stages"},
    "pipeline": {"common", "config", "runtime", "rankings", "preference", "stages", "pipeline"},
    "commands": {"common", "config", "runtime", "rankings", "preference", "stages", "pipeline", "commands"},
}
"""The arrows of the code map: what each layer's modules may import (their own layer included)."""

STAGES = {
    "sft": ("alignment.sft",),
    "dpo": ("alignment.dpo",),
    "ppo": ("alignment.ppo",),
    "eval": ("alignment.evaluate", "alignment.bon"),  # best-of-N is a kind of policy `rlhf eval` samples
    "reward": ("reward.train",),
    "sample": ("reward.rankings.sampling", "reward.rankings.active"),
}
"""The stages, side by side: none imports another."""

NO_TORCH = ("reward.rankings.app", "reward.rankings.store")
"""The ranking app and its store: a server that holds no model."""
HEAVY = ("torch", "transformers", "peft", "accelerate", "deepspeed", "trl", "alignment.runtime")


def _module_name(path: str) -> str:
    return os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")


def _imports(path: str, module: str) -> set[str]:
    """Every module `path` imports (absolute names; `from a import b` counts as a.b when that is a module)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" for a in node.names)
            found.add(base)
    return found


def _all_modules() -> dict[str, set[str]]:
    """{module: the modules of ours it imports (the most specific name that is a module)} for both packages."""
    paths = {}
    for top in ("alignment", "reward"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            if "migrations" in folder:
                continue
            paths.update(
                {_module_name(os.path.join(folder, n)): os.path.join(folder, n) for n in files if n.endswith(".py")}
            )
    graph = {}
    for module, path in paths.items():
        ours = {name for name in _imports(path, module) if name.split(".")[0] in ("alignment", "reward")}
        # `from pkg import mod` names pkg.mod; a name that is not a module is an attribute of its module
        graph[module] = {name if name in paths else name.rpartition(".")[0] for name in ours} - {""}
        graph[module] = {name for name in graph[module] if name in paths}
        graph[module].discard(module)
    return graph


def _third_party(module: str) -> set[str]:
    path = os.path.join(REPO, *module.split(".")) + ".py"
    if not os.path.isfile(path):
        path = os.path.join(REPO, *module.split("."), "__init__.py")
    return {name for name in _imports(path, module) if name.split(".")[0] not in ("alignment", "reward")}


def _owner(module: str, table: dict[str, tuple[str, ...]]) -> str | None:
    """The key of `table` whose longest prefix matches `module` (None: no prefix does)."""
    best, length = None, -1
    for key, prefixes in table.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = key, len(prefix)
    return best


GRAPH = _all_modules()


def _is_bare_package(module: str) -> bool:
    """A package's __init__ that imports nothing of ours (alignment, reward, reward.rankings): in no layer."""
    init = os.path.join(REPO, *module.split("."), "__init__.py")
    return os.path.isfile(init) and not GRAPH[module]


def test_every_module_is_in_one_layer_and_every_layer_exists():
    unplaced = [m for m in GRAPH if _owner(m, LAYERS) is None and not _is_bare_package(m)]
    assert unplaced == [], "modules in no layer of tests/test_layering.py (and of the README's code map)"
    prefixes = [p for group in (*LAYERS.values(), *STAGES.values(), NO_TORCH) for p in group]
    missing = [p for p in prefixes if not any(m == p or m.startswith(p + ".") for m in GRAPH)]
    assert missing == [], "a rule names a module that does not exist (moved? update the rule and the code map)"


@pytest.mark.parametrize("layer", list(LAYERS))
def test_imports_only_run_down_the_drawn_arrows(layer):
    bad = []
    for module, imported in sorted(GRAPH.items()):
        if _owner(module, LAYERS) != layer:
            continue
        for name in sorted(imported):
            target = _owner(name, LAYERS)
            if target is not None and target not in MAY_IMPORT[layer]:
                bad.append(f"{module} ({layer}) imports {name} ({target})")
    assert bad == []


def test_no_stage_imports_another():
    bad = []
    for module, imported in sorted(GRAPH.items()):
        stage = _owner(module, STAGES)
        for name in sorted(imported):
            other = _owner(name, STAGES)
            if stage is not None and other is not None and other != stage:
                bad.append(f"{module} ({stage}) imports {name} ({other})")
    assert bad == []


def _reach(start: str) -> set[str]:
    """Every module of ours `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += GRAPH.get(module, ())
    return seen


@pytest.mark.parametrize("package", NO_TORCH)
def test_the_ranking_app_and_store_import_no_torch_transformers_or_runtime(package):
    bad = []
    for module in sorted(m for m in GRAPH if m == package or m.startswith(package + ".")):
        for reached in sorted(_reach(module)):
            heavy = {name for name in _third_party(reached) | {reached} if name.startswith(HEAVY)}
            bad += [f"{module} -> {reached} imports {name}" for name in sorted(heavy)]
    assert bad == []


def test_importing_the_server_loads_no_torch():
    """The same, as Python sees it: the ranking server's whole import leaves torch and transformers unloaded."""
    code = (
        "import sys, reward.rankings.app.server, reward.rankings.store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_test_only_code_is_not_shipped():
    """Oracles that exist only to check the framework live under tests/, not in the packages."""
    assert not [m for m in GRAPH if m.endswith(".exact")], "exact-optimum oracle belongs in tests/oracles"
