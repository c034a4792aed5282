"""Failed-login throttling: a password guesser gets a few tries per window, then 429 until it passes.

Two keys are counted: (client address, user name), so one person mistyping does not lock a colleague
out, and the client address alone with a larger budget, so one client cannot spray a common password
over every account.

Each password check is reserved before it runs: `reserve` counts the window's failures and, under the
budget, records this attempt as a failure in the same transaction (or under the same lock), so 30 guesses
arriving at once get at most `max_failures` password checks, not 30 that all counted zero failures before
any was recorded. A successful login then clears its (address, name) key, the reserved attempt included.
With a store the attempts are rows in the database, so every server process and worker shares one budget
(N workers do not give N times the guesses); without one (tests) they live in this process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial


class LoginLimiter:
    def __init__(self, max_failures: int, window_seconds: float, clock=None, store=None):
        self.max_failures = max_failures
        self.per_client = max_failures * 5
        self.window = window_seconds
        self.store = store
        # Shared rows need a clock every process agrees on: wall time; in memory a monotonic one is safer.
        self.clock = clock or (time.time if store is not None else time.monotonic)
        self._failures: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def wait(self, pair: list[float], whole: list[float], now: float) -> float:
        """Seconds until one more try is allowed, given the window's failure times (sorted) for this client and
        name (`pair`) and for this client (`whole`); 0 when it is allowed now."""
        waits = [
            times[-limit] + self.window - now
            for times, limit in ((pair, self.max_failures), (whole, self.per_client))
            if len(times) >= limit
        ]
        return max(waits, default=0.0)

    def reserve(self, client: str, username: str) -> float:
        """Reserve one password check for `client` trying `username`: 0 when reserved (it counts as a failure
        until `succeeded`), else the seconds to wait, and nothing is reserved. Off when max_failures is 0."""
        if self.max_failures <= 0:
            return 0.0
        now = self.clock()
        if self.store is not None:
            # the store counts and records in one transaction, asking `wait` inside it
            return self.store.reserve_login_attempt(
                client, username, now, now - self.window, partial(self.wait, now=now)
            )
        with self._lock:
            keys = ((client, username), (client,))
            wait = self.wait(self._recent(keys[0], now), self._recent(keys[1], now), now)
            if wait <= 0:
                for key in keys:
                    self._failures.setdefault(key, deque()).append(now)
            return wait

    def _recent(self, key: tuple, now: float) -> list[float]:
        q = self._failures.get(key)
        if q is None:
            return []
        while q and now - q[0] >= self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return list(q)

    def succeeded(self, client: str, username: str) -> None:
        """The reserved check passed: this client's failures for `username` (the reservation too) stop counting."""
        if self.max_failures <= 0:
            return
        if self.store is not None:
            self.store.clear_login_failures(client, username)
            return
        with self._lock:
            whole = self._failures.get((client,), deque())
            for at in self._failures.pop((client, username), ()):
                whole.remove(at)
