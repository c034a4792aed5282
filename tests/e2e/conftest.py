"""The demo run the end-to-end tests share: `rlhf demo` exactly as the README runs it, once per session."""

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """(the demo's run folder, the finished process) for `rlhf demo output_dir=...` run from outside the checkout.

    The folder is named as benchmarks/worlds.py names the same run (world reviews, seed 42), so the worlds test
    reads it instead of training it again."""
    root = tmp_path_factory.mktemp("worlds")
    out = root / "reviews-42"
    proc = run_cli("demo", f"output_dir={out}", cwd=root, timeout=2400)
    return out, proc
