"""Failed-login throttling: a password guesser gets a few tries per window, then 429 until it passes.

Two keys are counted: (client address, user name), so one person mistyping does not lock a colleague
out, and the client address alone with a larger budget, so one client cannot spray a common password
over every account. Only failures count; a successful login clears its (address, name) key. With a
store the failures are rows in the database, so every server process and worker shares one budget
(N workers do not give N times the guesses); without one (tests) they live in this process.
"""

from __future__ import annotations

import threading
import time
from collections import deque


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

    def _times(self, client: str, username: str, now: float) -> tuple[list[float], list[float]]:
        """Failure times inside the window: (this client and name, this client)."""
        if self.store is not None:
            return self.store.login_failure_times(client, username, now - self.window)
        with self._lock:
            return self._recent((client, username), now), self._recent((client,), now)

    def _recent(self, key: tuple, now: float) -> list[float]:
        q = self._failures.get(key)
        if q is None:
            return []
        while q and now - q[0] >= self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return list(q)

    def retry_after(self, client: str, username: str) -> float:
        """Seconds until this client may try `username` again; 0 when it may now. Off when max_failures is 0."""
        if self.max_failures <= 0:
            return 0.0
        now = self.clock()
        pair, whole = self._times(client, username, now)
        waits = [
            times[-limit] + self.window - now
            for times, limit in ((pair, self.max_failures), (whole, self.per_client))
            if len(times) >= limit
        ]
        return max(waits, default=0.0)

    def failed(self, client: str, username: str) -> None:
        if self.max_failures <= 0:
            return
        now = self.clock()
        if self.store is not None:
            self.store.record_login_failure(client, username, now, forget_before=now - self.window)
            return
        with self._lock:
            for key in ((client, username), (client,)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, client: str, username: str) -> None:
        if self.store is not None:
            if self.max_failures > 0:
                self.store.clear_login_failures(client, username)
            return
        with self._lock:
            self._failures.pop((client, username), None)
