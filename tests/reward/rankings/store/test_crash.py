"""SIGKILL the server under load, restart it, and find every acknowledged ranking (and no doubles on retry)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from reward.rankings.annotator import ScriptedAnnotator
from reward.rankings.app.process import RankServer
from tests.reward.rankings.conftest import add_tasks

pytestmark = pytest.mark.slow


def test_sigkill_under_load_loses_no_acknowledged_ranking(store, tmp_path):
    add_tasks(store, 200, k=2)
    names = [f"ann{i}" for i in range(8)]
    for name in names:
        store.add_user(name, password="pw-" + name)
    log = str(tmp_path / "srv.log")
    srv = RankServer(store=store.url, annotators_per_task=2, lease_seconds=30, log_path=log).start()
    bots = [
        ScriptedAnnotator(srv.url, n, "pw-" + n, lambda p, t: len(t), seed=i, retries=1) for i, n in enumerate(names)
    ]
    for b in bots:
        b.login()
    stop = threading.Event()

    def hammer(bot: ScriptedAnnotator) -> None:
        while not stop.is_set():
            try:
                if bot.run(max_tasks=1) == 0:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                return  # the server is gone; whatever was acknowledged before is what must survive

    threads = [threading.Thread(target=hammer, args=(b,)) for b in bots]
    for t in threads:
        t.start()
    time.sleep(2.0)
    srv.kill()  # SIGKILL mid-load: no shutdown hooks, requests cut off
    stop.set()
    for t in threads:
        t.join(timeout=30)
    acked = {a["ranking_id"]: a for b in bots for a in b.acknowledged}
    assert len(acked) >= 20, f"too little load before the kill ({len(acked)} acknowledged)"

    with RankServer(store=store.url, annotators_per_task=2, lease_seconds=30, log_path=log) as again:
        stored = {r["ranking_id"]: r for r in store.rankings()}
        lost = [rid for rid in acked if rid not in stored]
        print(f"acknowledged {len(acked)}, stored {len(stored)}, lost {len(lost)}")
        assert lost == []
        assert all(stored[rid]["ranks"] == a["ranks"] for rid, a in acked.items())
        # Clients retrying their last requests against the restarted server get the same rankings back.
        for bot in bots:
            bot.http = httpx.Client(base_url=again.url, timeout=30)
            for a in bot.acknowledged[-3:]:
                r = bot.submit(a["task_id"], a["ranks"], key=a["idempotency_key"])
                assert r.status_code == 200 and r.json()["ranking_id"] == a["ranking_id"] and r.json()["replay"]
            bot.close()
    assert len(store.rankings()) == len(stored)
