"""Fixtures for the ranking store, app and export tests: a fresh store, tasks, a live server, PostgreSQL."""

from __future__ import annotations

import pytest

from reward.rankings.store import open_store


def add_tasks(store, n: int, k: int = 3, prefix: str = "prompt") -> list[int]:
    """n tasks of k completions each, with distinct texts; returns their ids."""
    return [
        store.add_task(
            f"{prefix} {i}: which answer is best?",
            [
                {"text": f"answer {j} to {prefix} {i}", "model": "tiny", "gen": {"temperature": 1.0}, "seed": j}
                for j in range(k)
            ],
            {"source": "test"},
        )
        for i in range(n)
    ]


def local_client(app, **options):
    """A TestClient for `app` that calls it as a browser on this machine does (Host: 127.0.0.1): by default the app
    serves only the hosts it is bound to, and TestClient's own `testserver` is not one of them."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", **options)


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "rank.db"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster per test session; each test makes its own database."""
    from reward.rankings.store.throwaway_pg import ThrowawayPostgres, find_pg_bin

    if find_pg_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with ThrowawayPostgres() as pg:
        yield pg


@pytest.fixture
def pg_url(pg_cluster, request):
    import re

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return pg_cluster.create_database(name)
