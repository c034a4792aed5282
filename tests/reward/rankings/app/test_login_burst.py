"""A burst of wrong passwords against a real server: the throttle reserves each password check before it runs,
so 30 guesses at the same moment get at most `login_max_failures` scrypt checks, on 1 and on 2 uvicorn workers,
on SQLite and on PostgreSQL.

The checks are counted inside the server processes: a `sitecustomize` on their PYTHONPATH wraps the real
`verify_password` (the real scrypt still runs) and the throttle's `reserve`, appending one line per call with
the worker's pid to a file."""

from __future__ import annotations

import os
import textwrap
import threading

import httpx
import pytest

from reward.rankings.app.process import RankServer
from reward.rankings.store import open_store

pytestmark = pytest.mark.slow

GUESSES = 30
BUDGET = 10  # login_max_failures, the default

COUNTER = """
import os

if os.environ.get("RLHF_TEST_PASSWORD_CHECKS"):
    from reward.rankings.app.ratelimit import LoginLimiter
    from reward.rankings.store import auth

    def _counted(what, real):
        def call(*args, **kwargs):
            with open(os.environ["RLHF_TEST_PASSWORD_CHECKS"], "a") as f:
                f.write(f"{what} {os.getpid()}\\n")
            return real(*args, **kwargs)

        return call

    auth.verify_password = _counted("check", auth.verify_password)
    LoginLimiter.reserve = _counted("attempt", LoginLimiter.reserve)
"""


@pytest.fixture
def counted_checks(tmp_path, monkeypatch):
    """The file every server process started from now on appends a line to per login attempt and password check."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(COUNTER))
    path = tmp_path / "checks.log"
    path.write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("RLHF_TEST_PASSWORD_CHECKS", str(path))
    return path


def burst(url: str, n: int, username: str) -> list[int]:
    """`n` wrong passwords for `username`, all sent at the same moment from their own connections (each opened,
    with a first request, before the moment); the status codes."""
    ready = threading.Barrier(n)
    codes: list[int] = []

    def guess(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            http.get("/login")
            ready.wait()
            codes.append(http.post("/api/login", json={"username": username, "password": f"guess-{i}"}).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


TRIES = 4  # the per-client budget (5x a name's) leaves room for 4 spent bursts from one address


def check_burst(store_url: str, workers: int, checks_file) -> None:
    """Every burst gets at most the budget of checks; with several workers, the kernel decides which worker accepts
    each connection and may hand all of a burst to one, so a burst that did not reach every worker is repeated
    against a fresh name (its budget untouched) until one does: that burst shows the budget is shared."""
    store = open_store(store_url)
    for i in range(TRIES):
        store.add_user(f"ann{i}", password="pw-ann")
    store.close()
    reached = set()
    with RankServer(store=store_url, workers=workers) as server:
        for i in range(TRIES):
            checks_file.write_text("")
            codes = burst(server.url, GUESSES, f"ann{i}")
            calls = [line.split() for line in checks_file.read_text().splitlines()]
            right = httpx.post(server.url + "/api/login", json={"username": f"ann{i}", "password": "pw-ann"})
            checks = [pid for what, pid in calls if what == "check"]
            attempts = [pid for what, pid in calls if what == "attempt"]
            assert len(codes) == GUESSES and set(codes) <= {401, 429}, codes
            assert len(attempts) == GUESSES
            assert len(checks) <= BUDGET, f"{len(checks)} password checks for {GUESSES} concurrent guesses"
            assert codes.count(401) == len(checks) and codes.count(429) == GUESSES - len(checks)
            assert right.status_code == 429  # the budget is spent: even the right password waits
            reached = set(attempts)
            if len(reached) == workers:
                break
    assert len(reached) == workers, f"{TRIES} bursts each reached only {len(reached)} of {workers} workers"


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_a_burst_of_wrong_passwords_gets_at_most_the_budget_of_checks(tmp_path, counted_checks, workers):
    check_burst(str(tmp_path / "rankings.db"), workers, counted_checks)


@pytest.mark.postgres
def test_a_burst_on_postgresql_with_2_workers(pg_url, counted_checks):
    check_burst(pg_url, 2, counted_checks)
