"""A throwaway PostgreSQL cluster on a free loopback port (tests and the benchmark; never production).

PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres` user
via runuser; `initdb -A trust` because the cluster lives for one test session on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile


def find_pg_bin() -> str | None:
    """The folder holding initdb/pg_ctl (PATH or /usr/lib/postgresql/*/bin), or None."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return os.path.dirname(candidates[0]) if candidates else None


def free_port() -> int:
    """A loopback port nobody listens on now (the store knows nothing of the app's helpers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    def __init__(self, bin_dir: str | None = None):
        self.bin_dir = bin_dir or find_pg_bin()
        if self.bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        # As root the server runs as `postgres`, which must be able to reach its folder: not under /root.
        self.root = tempfile.mkdtemp(prefix="rlhf-pg-", dir="/tmp" if self.as_root else None)
        self.data = os.path.join(self.root, "data")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root)

    def start(self) -> ThrowawayPostgres:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(os.path.join(self.bin_dir, "initdb"), "-A", "trust", "-U", "postgres", "-D", self.data, "--no-sync")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=300 -c fsync=on"
        self._run(
            os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-o", opts, "-l", self.data + "/log", "-w", "start"
        )
        return self

    def create_database(self, name: str) -> str:
        """A fresh database in this cluster; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
