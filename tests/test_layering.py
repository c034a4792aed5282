"""The package layout is the architecture: these import rules keep it that way.

    runtime (accelerator, loop, generation, logprobs, ...)  <-  stages (sft, dpo, ppo, reward.train)  <-  pipeline, demo
    reward model (model, losses, data)  <-  reward.train, ppo, evaluate
    runtime generation  <-  ppo, evaluate, rankings.sampling (none of them imports another's internals)
    rankings.store  <-  rankings.app

Read from the source with `ast` (every import, at module top or inside a function), so a lazy import
cannot hide a dependency.
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _all_modules() -> dict[str, set[str]]:
    """{module name: names it imports} for every module of the two packages."""
    found = {}
    for top in ("alignment", "reward"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if not name.endswith(".py") or "migrations" in folder:
                    continue
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                imported = set()
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if isinstance(node, ast.Import):
                        imported.update(a.name for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        imported.add(node.module)
                        imported.update(f"{node.module}.{a.name}" for a in node.names)
                found[module] = imported
    return found


def modules(package: str) -> dict[str, set[str]]:
    """The modules of `package` (a package or a single module, dotted) and what each imports."""
    return {m: i for m, i in _all_modules().items() if m == package or m.startswith(package + ".")}


def offenders(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for module, imported in sorted(modules(package).items()):
        for name in sorted(imported):
            if name.startswith(forbidden) and not name.startswith(allowed):
                bad.append(f"{module} imports {name}")
    return bad


STAGES = ("alignment.sft", "alignment.dpo", "alignment.ppo", "alignment.pipeline", "alignment.demo",
          "alignment.evaluate", "alignment.report", "reward.train")  # fmt: skip


@pytest.mark.parametrize(
    "package, forbidden, allowed",
    [
        # the runtime is what stages share: it knows no stage and nothing of preferences
        ("alignment.runtime", (*STAGES, "reward"), ()),
        # the config loader and CLI dispatch know no stage (the CLI imports stages by name, lazily)
        ("alignment.config", (*STAGES, "reward"), ()),
        # the reward model (model, losses, data, train) knows nothing of the web app or the store
        ("reward.model", ("reward.rankings.app", "reward.rankings.store", "reward.rankings.sampling"), ()),
        ("reward.losses", ("reward.rankings", "alignment.ppo", "alignment.sft"), ()),
        ("reward.data", ("reward.rankings.app", "reward.rankings.store", "reward.rankings.sampling"), ()),
        ("reward.train", ("reward.rankings.app", "reward.rankings.store", "alignment.ppo", "alignment.sft"), ()),
        # the store is below the app
        ("reward.rankings.store", ("reward.rankings.app",), ()),
        # the training stages never import each other
        ("alignment.sft", ("alignment.ppo", "alignment.dpo", "reward"), ()),
        ("alignment.ppo", ("alignment.sft", "alignment.dpo", "reward.train", "reward.rankings"), ()),
        ("alignment.dpo", ("alignment.sft", "alignment.ppo.train", "reward.train", "reward.rankings.app"), ()),
        # generation and per-token math are the runtime's: evaluation and sampling need nothing of PPO
        ("alignment.evaluate", ("alignment.ppo", "alignment.sft", "reward.train"), ()),
        ("reward.rankings.sampling", ("alignment.ppo", "alignment.sft", "reward.train"), ()),
        # the uncertainty and acquisition math knows no ranking product and no policy training
        ("reward.uncertainty", ("reward.rankings", "alignment.ppo", "alignment.sft"), ()),
        ("reward.acquisition", ("reward.rankings", "alignment.ppo", "alignment.sft"), ()),
        ("reward.rankings.active", ("alignment.ppo", "alignment.sft", "reward.train", "reward.rankings.app"), ()),
    ],
)
def test_imports_follow_the_layers(package, forbidden, allowed):
    if not modules(package):
        pytest.skip(f"{package} does not exist yet")
    assert offenders(package, forbidden, allowed) == []


def test_test_only_code_is_not_shipped():
    """Oracles that exist only to check the framework live under tests/, not in the packages."""
    shipped = {m for pkg in ("alignment", "reward") for m in modules(pkg)}
    assert not [m for m in shipped if m.endswith(".exact")], "exact-optimum oracle belongs in tests/oracles"
