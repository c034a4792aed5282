"""Ranking server throughput and latency: SQLite vs PostgreSQL, and many annotators with think time.

    python benchmarks/ranking_server.py [--clients 64] [--seconds 10] [--tasks 4000] [--backends sqlite,postgres]
                                        [--think-clients 500] [--think-seconds 5] [--round-trips 1]

Each backend gets a fresh store, a real `rlhf rank serve` process on a loopback port, and `--clients`
annotators that rank as fast as the server lets them: lease a task, then submit it (bearer token,
one keep-alive connection each). With `--round-trips 1` (the default, what the ranking page does) the
submit also leases the next task (`"next": true`); with 2 the client asks for the next task
separately. Latency is the submit round trip (the acknowledged commit). The think-time mode then
runs `--think-clients` annotators on SQLite who each wait a random 0.5x-1.5x `--think-seconds`
before every submit, like people reading, and reports the same figures at that load.

The client is plain asyncio over HTTP/1.1 (no HTTP library), because it shares the machine's cores
with the server and must not be what is measured. Afterwards every acknowledged ranking is looked
up in the store: `lost` must be 0. PostgreSQL runs in a throwaway cluster (skipped if its binaries
are absent); the ratio line compares it with SQLite from this run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402
from reward.rankings.app.process import RankServer  # noqa: E402
from reward.rankings.store import open_store  # noqa: E402


class Client:
    """One annotator's keep-alive HTTP/1.1 connection: POST JSON with a bearer token, read a JSON reply."""

    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def open(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body or {}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        try:
            line = await self.reader.readline()
        except ConnectionError:
            line = b""
        if not line:
            # The server closed an idle keep-alive connection (think time): reconnect and resend, as a browser
            # does (safe: a submit carries its idempotency key).
            self.close()
            await self.open()
            self.writer.write(head.encode() + data)
            line = await self.reader.readline()
        status = int(line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b"{}"
        return status, json.loads(payload)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def seed_store(url: str, tasks: int, users: int, k: int) -> list[str]:
    """Tasks and accounts; returns one API token per account (made in the store: logins are not measured)."""
    store = open_store(url)
    batch = 1000
    for start in range(0, tasks, batch):
        store.add_tasks(
            [
                {
                    "prompt": f"benchmark prompt {i}",
                    "completions": [{"text": f"completion {j} of {i}"} for j in range(k)],
                }
                for i in range(start, min(tasks, start + batch))
            ]
        )
    tokens = []
    for c in range(users):
        store.add_user(f"bench{c}")  # no password: the token is made here, and scrypt would dominate setup
        tokens.append(store.create_token(f"bench{c}", ttl_seconds=3600)[0])
    store.close()
    return tokens


async def annotator(client: Client, deadline: float, think: float, args, out: dict) -> None:
    """Lease, (think,) submit, until the deadline or until no task is left."""
    rng = random.Random(id(client))
    status, reply = await client.post("/api/tasks/next")
    task = reply.get("task") if status == 200 else None
    while task is not None and time.perf_counter() < deadline:
        if think:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))
            if time.perf_counter() >= deadline:
                break
        ranks = list(range(1, len(task["completions"]) + 1))
        rng.shuffle(ranks)
        body = {"ranks": ranks, "idempotency_key": uuid.uuid4().hex, "next": args.round_trips == 1}
        t0 = time.perf_counter()
        status, reply = await client.post(f"/api/tasks/{task['task_id']}/submit", body)
        if status == 200 and reply.get("saved"):
            out["latencies"].append(time.perf_counter() - t0)
            out["acked"].append(reply["ranking_id"])
        elif status != 409:
            out["errors"].append(f"submit {status}")
        if args.round_trips == 1 and status == 200:
            task = reply["next"]["task"]
        else:
            status, reply = await client.post("/api/tasks/next")
            task = reply.get("task") if status == 200 else None
            if status != 200:
                out["errors"].append(f"next {status}")


async def load(port: int, tokens: list[str], seconds: float, think: float, args) -> dict:
    out = {"latencies": [], "acked": [], "errors": []}
    clients = [await Client(port, t).open() for t in tokens]
    t0 = time.perf_counter()
    await asyncio.gather(*(annotator(c, t0 + seconds, think, args, out) for c in clients))
    # Think-time annotators asleep at the deadline end after it without submitting: count the window only.
    out["wall"] = min(time.perf_counter() - t0, seconds)
    for c in clients:
        c.close()
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc); nan elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_backend(name: str, url: str, args, clients: int, seconds: float, think: float = 0.0) -> dict:
    tokens = seed_store(url, args.tasks, clients, args.k)
    here = os.path.dirname(os.path.abspath(__file__))
    log = os.path.join(here, f"ranking_server_{name}.log") if args.keep_log else None
    settings = dict(annotators_per_task=args.n, lease_seconds=120, workers=args.workers, log_level="warning")
    with RankServer(store=url, log_path=log, **settings) as srv:
        cpu0 = cpu_seconds(srv.proc.pid)
        out = asyncio.run(load(srv.port, tokens, seconds, think, args))
        server_cpu = cpu_seconds(srv.proc.pid) - cpu0
    store = open_store(url)
    stored = {r["ranking_id"] for r in store.rankings()}
    store.close()
    lat = out["latencies"]
    return {
        "backend": name,
        "clients": clients,
        "rankings": len(out["acked"]),
        "wall_s": out["wall"],
        "per_s": len(out["acked"]) / out["wall"],
        "p50_ms": 1000 * pct(lat, 0.50),
        "p99_ms": 1000 * pct(lat, 0.99),
        "lost": len(set(out["acked"]) - stored),
        # Load-independent: the server's CPU per ranking (the machine's other work does not inflate it).
        "cpu_ms": 1000 * server_cpu / max(1, len(out["acked"])),
        "errors": len(out["errors"]),
        "error_kinds": dict(collections.Counter(out["errors"])),
    }


def with_postgres(fn):
    from reward.rankings.store.throwaway_pg import ThrowawayPostgres, find_pg_bin

    if find_pg_bin() is None:
        print("postgres: skipped (initdb/pg_ctl not found)")
        return None
    with ThrowawayPostgres() as pg:
        return fn(pg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per backend (bounded)")
    ap.add_argument("--tasks", type=int, default=4000, help="tasks per store (bounds the ranking count)")
    ap.add_argument("--n", type=int, default=2, help="annotators per task")
    ap.add_argument("--k", type=int, default=4, help="completions per task")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--round-trips", type=int, choices=(1, 2), default=1, help="HTTP requests per ranking")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--think-clients", type=int, default=500, help="annotators in the think-time mode (0: skip it)")
    ap.add_argument("--think-seconds", type=float, default=5.0, help="mean think time before each submit")
    ap.add_argument("--think-window", type=float, default=15.0, help="measured window of the think-time mode")
    ap.add_argument("--keep-log", action="store_true", help="write each server's log beside this script")
    args = ap.parse_args()
    print(harness.machine(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                results.append(run_backend("sqlite", os.path.join(tmp, "bench.db"), args, args.clients, args.seconds))
            elif backend == "postgres":
                r = with_postgres(
                    lambda pg: run_backend("postgres", pg.create_database("bench"), args, args.clients, args.seconds)
                )
                if r:
                    results.append(r)
            print(_row(results[-1]), flush=True)
        if args.think_clients:
            think = run_backend(
                "sqlite+think",
                os.path.join(tmp, "think.db"),
                args,
                args.think_clients,
                args.think_window,
                args.think_seconds,
            )
            results.append(think)
            print(_row(think), flush=True)
    _report(results, args)
    return 1 if sum(r["lost"] for r in results) else 0


def _report(results: list[dict], args) -> None:
    load1, load5, _ = os.getloadavg()
    print(
        f"\nN={args.n}, K={args.k}, {args.workers} uvicorn worker(s), {args.round_trips} request(s) per ranking, "
        f"{os.cpu_count()} CPUs (load average {load1:.1f} / {load5:.1f} over 1 / 5 min; clients and server share them)"
    )
    print(
        f"{'backend':<13} {'clients':>7} {'rankings':>8} {'seconds':>8} {'rank/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'lost':>5} {'errors':>6} {'server CPU ms/ranking':>22}"
    )
    for r in results:
        print(_row(r))
    for r in results:
        if r["errors"]:
            print(f"{r['backend']} errors (HTTP status other than 200/409): {r['error_kinds']}")
    by = {r["backend"]: r for r in results}
    if "sqlite" in by and "postgres" in by:
        ratio = by["postgres"]["per_s"] / by["sqlite"]["per_s"]
        print(
            f"ratio postgres/sqlite throughput: {ratio:.2f}x (p99 {by['postgres']['p99_ms'] / by['sqlite']['p99_ms']:.2f}x)"
        )
    if "sqlite+think" in by:
        t = by["sqlite+think"]
        print(
            f"think time {args.think_seconds:g} s (0.5x-1.5x), {t['clients']} annotators: {t['per_s']:.1f} rankings/s, "
            f"p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms"
        )
    print(f"lost acknowledged rankings: {sum(r['lost'] for r in results)}")


def _row(r: dict) -> str:
    return (
        f"{r['backend']:<13} {r['clients']:>7} {r['rankings']:>8} {r['wall_s']:>8.1f} {r['per_s']:>8.1f} "
        f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['lost']:>5} {r['errors']:>6} {r['cpu_ms']:>22.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
