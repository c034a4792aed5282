"""Habits the code keeps: functions short enough to read on one screen.

ruff enforces the rest in CI (lint, format, C901 complexity at most 15; see pyproject.toml).
"""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION_LINES = 80


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """`path:line name (N lines)` for every function in alignment/ and reward/ (not migrations) over `limit` lines."""
    found = []
    for top in ("alignment", "reward"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in sorted(files):
                if not name.endswith(".py") or "migrations" in folder:
                    continue
                path = os.path.join(folder, name)
                tree = ast.parse(open(path, encoding="utf-8").read())
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        lines = node.end_lineno - node.lineno + 1
                        if lines > limit:
                            found.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    assert long_functions() == []
