"""Ranking server throughput: rankings/s and submit latency with 64 concurrent annotators, SQLite vs PostgreSQL.

    python benchmarks/ranking_server.py [--clients 64] [--seconds 10] [--tasks 1500] [--backends sqlite,postgres]

Each backend gets a fresh store, a real `rlhf rank serve` process on a loopback port, and `--clients`
annotators (asyncio + httpx, one bearer token each) looping lease -> submit until the time or the
tasks run out. Latency is the submit round trip (the acknowledged commit). Afterwards every
acknowledged ranking is looked up in the store: `lost` must be 0. PostgreSQL runs in a throwaway
cluster (skipped if its binaries are absent); the ratio line compares it with SQLite from this run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402

from reward.rankings.app.process import RankServer  # noqa: E402
from reward.rankings.store import open_store  # noqa: E402


def seed_store(url: str, tasks: int, clients: int, k: int) -> None:
    store = open_store(url)
    store.add_tasks(
        [
            {"prompt": f"benchmark prompt {i}", "completions": [{"text": f"completion {j} of {i}"} for j in range(k)]}
            for i in range(tasks)
        ]
    )
    for c in range(clients):
        store.add_user(f"bench{c}", password="bench-pw")
    store.close()


async def login(url: str, name: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=url, timeout=60)
    r = await http.post("/api/login", json={"username": name, "password": "bench-pw"})
    http.headers["Authorization"] = "Bearer " + r.json()["token"]
    return http


async def annotator(http, deadline: float, latencies: list[float], acked: list[int], errors: list[str]):
    rng = random.Random(id(http))
    while time.perf_counter() < deadline:
        r = await http.post("/api/tasks/next")
        task = r.json()["task"] if r.status_code == 200 else None
        if task is None:
            if r.status_code != 200:
                errors.append(f"next {r.status_code}")
            return
        ranks = list(range(1, len(task["completions"]) + 1))
        rng.shuffle(ranks)
        t0 = time.perf_counter()
        r = await http.post(
            f"/api/tasks/{task['task_id']}/submit", json={"ranks": ranks, "idempotency_key": uuid.uuid4().hex}
        )
        if r.status_code == 200 and r.json().get("saved"):
            latencies.append(time.perf_counter() - t0)
            acked.append(r.json()["ranking_id"])
        elif r.status_code != 409:
            errors.append(f"submit {r.status_code}")


async def load(url: str, clients: int, seconds: float):
    latencies: list[float] = []
    acked: list[int] = []
    errors: list[str] = []
    # Log everyone in first: scrypt logins are deliberately slow and are not what this measures.
    https = await asyncio.gather(*(login(url, f"bench{c}") for c in range(clients)))
    t0 = time.perf_counter()
    await asyncio.gather(*(annotator(h, t0 + seconds, latencies, acked, errors) for h in https))
    wall = time.perf_counter() - t0
    await asyncio.gather(*(h.aclose() for h in https))
    return latencies, acked, errors, wall


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_backend(name: str, url: str, args) -> dict:
    seed_store(url, args.tasks, args.clients, args.k)
    log = (
        os.path.join(os.path.dirname(os.path.abspath(__file__)), f"ranking_server_{name}.log")
        if args.keep_log
        else None
    )
    with RankServer(store=url, annotators_per_task=args.n, lease_seconds=60, workers=args.workers, log_path=log) as srv:
        latencies, acked, errors, wall = asyncio.run(load(srv.url, args.clients, args.seconds))
    store = open_store(url)
    stored = {r["ranking_id"] for r in store.rankings()}
    store.close()
    lost = len(set(acked) - stored)
    return {
        "backend": name,
        "rankings": len(acked),
        "wall_s": wall,
        "per_s": len(acked) / wall,
        "p50_ms": 1000 * pct(latencies, 0.50),
        "p99_ms": 1000 * pct(latencies, 0.99),
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else float("nan"),
        "lost": lost,
        "errors": len(errors),
        "error_kinds": dict(collections.Counter(errors)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per backend (bounded)")
    ap.add_argument("--tasks", type=int, default=1500, help="tasks per store (bounds the ranking count)")
    ap.add_argument("--n", type=int, default=2, help="annotators per task")
    ap.add_argument("--k", type=int, default=4, help="completions per task")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--keep-log", action="store_true", help="write each server's log beside this script")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                results.append(run_backend("sqlite", os.path.join(tmp, "bench.db"), args))
            elif backend == "postgres":
                from reward.rankings.store.throwaway_pg import ThrowawayPostgres, find_pg_bin

                if find_pg_bin() is None:
                    print("postgres: skipped (initdb/pg_ctl not found)")
                    continue
                with ThrowawayPostgres() as pg:
                    results.append(run_backend("postgres", pg.create_database("bench"), args))
            print(_row(results[-1]) if results else "", flush=True)
    load1 = os.getloadavg()[0]
    print(
        f"\n{args.clients} clients, N={args.n}, K={args.k}, {args.workers} uvicorn worker(s), "
        f"{os.cpu_count()} CPUs (load average {load1:.1f}; clients and server share them)"
    )
    print(
        f"{'backend':<10} {'rankings':>8} {'seconds':>8} {'rank/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'errors':>6}"
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
    lost = sum(r["lost"] for r in results)
    print(f"lost acknowledged rankings: {lost}")
    return 1 if lost else 0


def _row(r: dict) -> str:
    return (
        f"{r['backend']:<10} {r['rankings']:>8} {r['wall_s']:>8.1f} {r['per_s']:>8.1f} {r['p50_ms']:>8.1f} "
        f"{r['p99_ms']:>8.1f} {r['lost']:>5} {r['errors']:>6}"
    )


if __name__ == "__main__":
    sys.exit(main())
