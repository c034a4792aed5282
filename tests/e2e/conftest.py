"""The demo run the end-to-end tests share: `rlhf demo` exactly as the README runs it, once per session."""

import pathlib

import pytest

from tests.conftest import background, run_cli


@pytest.fixture(scope="session")
def demo_run(request, tmp_path_factory):
    """(the demo's run folder, the finished process) for `rlhf demo output_dir=...` run from outside the checkout.

    Started in the background when the session began (tests/conftest.py), so this waits for it; run here when no
    background run was started. The folder is named as benchmarks/worlds.py names the same run (world reviews,
    seed 42), so the worlds test reads it instead of training it again."""
    job = background(request, "demo")
    if job is not None:
        return pathlib.Path(job.folder) / "reviews-42", job.wait()
    root = tmp_path_factory.mktemp("worlds")
    out = root / "reviews-42"
    return out, run_cli("demo", f"output_dir={out}", cwd=root, timeout=2400)
