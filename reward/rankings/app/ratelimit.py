"""Failed-login throttling: a password guesser gets a few tries per window, then 429 until it passes.

Two keys are counted: (client address, user name), so one person mistyping does not lock a colleague
out, and the client address alone with a larger budget, so one client cannot spray a common password
over every account. Only failures count; a successful login clears its (address, name) key. The
counts live in the serving process: with several uvicorn workers each has its own, which multiplies
the budget by the worker count but never blocks a correct password for longer than the window.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class LoginLimiter:
    def __init__(self, max_failures: int, window_seconds: float, clock=time.monotonic):
        self.max_failures = max_failures
        self.per_client = max_failures * 5
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple, now: float) -> deque:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and now - q[0] >= self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, client: str, username: str) -> float:
        """Seconds until this client may try `username` again; 0 when it may now. Off when max_failures is 0."""
        if self.max_failures <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            waits = [
                q[0] + self.window - now
                for key, limit in (((client, username), self.max_failures), ((client,), self.per_client))
                if len(q := self._recent(key, now)) >= limit
            ]
        return max(waits, default=0.0)

    def failed(self, client: str, username: str) -> None:
        if self.max_failures <= 0:
            return
        now = self.clock()
        with self._lock:
            for key in ((client, username), (client,)):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, client: str, username: str) -> None:
        with self._lock:
            self._failures.pop((client, username), None)
