"""Run `rlhf rank serve` as a child process and wait until it answers (tests, benchmark, demo).

A real process, so tests exercise the real server (uvicorn, threads, SQLite/PostgreSQL locking)
and the crash test can SIGKILL it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RankServer:
    """`with RankServer(store=..., annotators_per_task=2) as srv: srv.url` serves on a free loopback port."""

    def __init__(self, log_path: str | None = None, startup_timeout: float = 60.0, **settings):
        self.port = int(settings.pop("port", 0)) or free_port()
        self.settings = {"host": "127.0.0.1", "log_level": "warning", **settings, "port": self.port}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> RankServer:
        args = [sys.executable, "-m", "alignment", "rank", "serve"]
        args += [f"{k}={'null' if v is None else v}" for k, v in self.settings.items()]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rank server exited with {self.proc.returncode} (log: {self.log_path})")
            try:
                if httpx.get(self.url + "/login", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rank server did not answer on {self.url} within {self.startup_timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what the crash test wants."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> RankServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
