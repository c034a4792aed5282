"""The same store and server guarantees on PostgreSQL, against a throwaway cluster started by the fixture."""

from __future__ import annotations

import threading
import time

import pytest

from reward.rankings.app.process import RankServer
from reward.rankings.store import Conflict, open_store
from tests.reward.rankings.conftest import add_tasks
from tests.reward.rankings.store.test_concurrency import check_exactly_n, run_annotators

pytestmark = pytest.mark.postgres


def test_concurrent_opens_migrate_once(pg_url):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(open_store(pg_url, pool_size=2))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 6
    assert stores[0].add_task("p", [{"text": "a"}, {"text": "b"}]) == stores[1].add_task(
        "p", [{"text": "b"}, {"text": "a"}]
    )
    for s in stores:
        s.close()


def test_store_threads_exactly_n_and_idempotent(pg_url):
    store = open_store(pg_url, pool_size=16)
    tids = add_tasks(store, 12, k=3)
    users = [store.add_user(f"u{i}", password="pw12") for i in range(10)]
    n = 3
    errors = []

    def work(u):
        try:
            while True:
                v = store.next_task(u, n, 60)
                if v is None:
                    # Done only when nothing is left for u; a task held by someone else may come back.
                    if store.progress(u, n)["available"] == 0:
                        return
                    time.sleep(0.02)
                    continue
                key = f"{u}-{v.task_id}"
                try:
                    first = store.submit(u, v.task_id, [1, 2, 3], key, n)
                except Conflict:
                    continue
                assert store.submit(u, v.task_id, [1, 2, 3], key, n) == {**first, "replay": True}
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    rows = store.rankings()
    assert len(rows) == len(tids) * n
    assert all(sum(r["task_id"] == t for r in rows) == n for t in tids)
    assert len({(r["task_id"], r["annotator"]) for r in rows}) == len(rows)
    store.close()


@pytest.mark.slow
def test_server_on_postgres_many_annotators(pg_url, tmp_path):
    store = open_store(pg_url)
    add_tasks(store, 20, k=3)
    names = [f"ann{i}" for i in range(8)]
    for name in names:
        store.add_user(name, password="pw-" + name)
    with RankServer(store=pg_url, annotators_per_task=2, lease_seconds=30, log_path=str(tmp_path / "srv.log")) as srv:
        bots = run_annotators(srv.url, names)
    check_exactly_n(store, bots, 20, 2)
    store.close()


def test_submit_refusals_on_postgres(pg_url):
    """The one-statement submit of PostgreSQL refuses what SQLite's does: lost lease, complete task, no task, bad ranks."""
    from reward.rankings.store import InvalidRanking, NotFound

    store = open_store(pg_url)
    (tid,) = add_tasks(store, 1)
    a, b, c = (store.add_user(n, password="pw12") for n in ("a", "b", "c"))
    assert store.next_task(a, 1, 0.01).task_id == tid
    time.sleep(0.05)  # a's lease expires and b takes the task
    assert store.next_task(b, 1, 60).task_id == tid
    with pytest.raises(Conflict, match="do not hold"):
        store.submit(a, tid, [1, 2, 3], "ka", 1)
    with pytest.raises(InvalidRanking):
        store.submit(b, tid, [1, 2], "kb", 1)
    first = store.submit(b, tid, [2, 1, 3], "kb", 1)
    assert store.submit(b, tid, [2, 1, 3], "kb", 1) == {**first, "replay": True}
    with pytest.raises(NotFound):
        store.submit(c, 10**9, [1, 2, 3], "kc", 1)
    (row,) = store.rankings()
    assert row["ranks"] == [2, 1, 3] and row["order_shown"] and row["seconds"] >= 0
    # undo and replace on PostgreSQL too
    store.undo(b, first["ranking_id"], 30, 60)
    assert store.submit(b, tid, [1, 2, 3], "kb2", 1)["replaced"] is True
    assert [r["ranks"] for r in store.rankings()] == [[1, 2, 3]]
    store.close()
