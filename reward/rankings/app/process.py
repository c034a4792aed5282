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
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerFailed(RuntimeError):
    """The server process exited before answering, or never answered; the message ends with its own last line."""


class RankServer:
    """`with RankServer(store=..., annotators_per_task=2) as srv: srv.url` serves on a free loopback port."""

    def __init__(self, log_path: str | None = None, startup_timeout: float = 60.0, **settings):
        self.port = int(settings.pop("port", 0)) or free_port()
        self.settings = {"host": "127.0.0.1", "log_level": "warning", **settings, "port": self.port}
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.output = None
        """Where the server's stdout and stderr go: the log file, or a temp file read for its last words."""

    def start(self) -> RankServer:
        args = [sys.executable, "-m", "alignment", "rank", "serve"]
        args += [f"{k}={'null' if v is None else v}" for k, v in self.settings.items()]
        self.output = open(self.log_path, "a+b") if self.log_path else tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=self.output, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"the ranking server for this run exited (code {self.proc.returncode}): {self.last_line()}"
                )
            try:
                if httpx.get(self.url + "/login", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"the rank server did not answer on {self.url} within {self.startup_timeout:g} s")

    def last_line(self) -> str:
        """The server's last line of output (its one-line error after a failed start), without `error: `."""
        fd = self.output.fileno()  # shared with the child: pread leaves the offset it writes at alone
        tail = os.pread(fd, 4096, max(os.fstat(fd).st_size - 4096, 0)).decode("utf-8", "replace")
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1].removeprefix("error: ") if lines else "no output"

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
        if self.output is not None:
            self.output.close()
            self.output = None

    def __enter__(self) -> RankServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
