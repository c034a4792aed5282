"""Failed-login throttling: the limiter against a hand-driven clock, then through the app's two login routes."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reward.rankings.app.ratelimit import LoginLimiter
from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig
from tests.reward.rankings.conftest import local_client


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_blocks_after_max_failures_until_the_window_passes():
    clock = Clock()
    limiter = LoginLimiter(max_failures=3, window_seconds=60, clock=clock)
    for _ in range(3):
        assert limiter.reserve("10.0.0.1", "ann") == 0  # reserved: a failure unless it succeeds
        clock.now += 10
    # the oldest failure (t=1000) leaves the window at t=1060
    assert limiter.reserve("10.0.0.1", "ann") == 30
    assert limiter.reserve("10.0.0.2", "ann") == 0  # another client is not locked out
    assert limiter.reserve("10.0.0.1", "bob") == 0  # nor is another account from this client
    clock.now = 1060
    assert limiter.reserve("10.0.0.1", "ann") == 0


def test_a_client_spraying_many_accounts_is_stopped_and_success_clears_its_own_key():
    clock = Clock()
    limiter = LoginLimiter(max_failures=2, window_seconds=60, clock=clock)
    for i in range(10):  # 5 x max_failures over ten accounts, two tries each never hit the per-account limit
        assert limiter.reserve("10.0.0.9", f"user{i}") == 0
    assert limiter.reserve("10.0.0.9", "someone-else") > 0
    limiter.reserve("10.0.0.3", "ann")
    limiter.reserve("10.0.0.3", "ann")
    limiter.succeeded("10.0.0.3", "ann")  # the reserved try passed: both of its key's failures stop counting
    assert limiter.reserve("10.0.0.3", "ann") == 0
    assert limiter.reserve("10.0.0.3", "ann") == 0
    assert limiter.reserve("10.0.0.3", "ann") > 0
    assert LoginLimiter(0, 60).reserve("x", "y") == 0  # 0 turns it off


@pytest.mark.parametrize("backend", ["memory", "store"])
def test_concurrent_tries_reserve_at_most_the_budget(store, backend):
    """Reserving is counting and recording at once: 30 threads at the same moment get exactly 3 tries."""
    limiter = LoginLimiter(max_failures=3, window_seconds=60, store=store if backend == "store" else None)
    start = threading.Barrier(30)

    def attempt(_):
        start.wait()
        return limiter.reserve("10.0.0.1", "ann")

    with ThreadPoolExecutor(30) as pool:
        waits = list(pool.map(attempt, range(30)))
    assert sum(w == 0 for w in waits) == 3 and all(w > 0 for w in waits if w != 0)


def test_the_app_answers_429_on_the_api_and_a_notice_on_the_form(store, tmp_path):
    store.add_user("ann", password="pw-ann")
    cfg = RankConfig(store=store.url, output_dir=str(tmp_path / "run"), login_max_failures=3)
    app = create_app(cfg, store=store)
    api = local_client(app)
    for _ in range(3):
        assert api.post("/api/login", json={"username": "ann", "password": "guess"}).status_code == 401
    r = api.post("/api/login", json={"username": "ann", "password": "pw-ann"})  # even the right one waits
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0 and "too many failed logins" in r.text

    page = api.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = {"username": "ann", "password": "pw-ann", "csrf_token": token, "next": "/rank"}
    r = api.post("/login", data=form, follow_redirects=False)
    assert "error=throttled" in r.headers["location"] and "rlhf_session" not in r.headers.get("set-cookie", "")
    assert "Too many failed logins" in api.get(r.headers["location"]).text
