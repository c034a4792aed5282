"""Many annotators against a real uvicorn server: leases are exclusive, exactly N per task, nothing lost or doubled."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import httpx
import pytest

from reward.rankings.annotator import ScriptedAnnotator
from reward.rankings.app.process import RankServer
from tests.reward.rankings.conftest import add_tasks

pytestmark = pytest.mark.slow


def length_score(prompt, text: str) -> float:
    return -abs(len(text) - 20)


def run_annotators(url: str, names: list[str], repeat_submits: bool = True) -> list[ScriptedAnnotator]:
    """Each name ranks until nothing is left, all in parallel; each ack is then re-sent with its key (a retry)."""
    bots = [ScriptedAnnotator(url, n, "pw-" + n, length_score, temperature=1.0, seed=i) for i, n in enumerate(names)]
    errors: list[BaseException] = []

    def work(bot: ScriptedAnnotator) -> None:
        try:
            bot.run()
            if repeat_submits:
                for ack in list(bot.acknowledged):
                    r = bot._post(
                        f"/api/tasks/{ack['task_id']}/submit",
                        {"ranks": ack["ranks"], "idempotency_key": ack["idempotency_key"]},
                    )
                    assert r.status_code == 200 and r.json()["replay"] is True
                    assert r.json()["ranking_id"] == ack["ranking_id"]
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(b,)) for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for b in bots:
        b.close()
    assert not errors, errors
    return bots


def check_exactly_n(store, bots, n_tasks: int, n: int) -> None:
    rows = store.rankings()
    acked = {a["ranking_id"] for b in bots for a in b.acknowledged}
    assert {r["ranking_id"] for r in rows} == acked, "acknowledged and stored rankings differ"
    assert len(rows) == n_tasks * n
    per_task = Counter(r["task_id"] for r in rows)
    assert set(per_task.values()) == {n} and len(per_task) == n_tasks
    assert len({(r["task_id"], r["annotator"]) for r in rows}) == len(rows)  # nobody ranked a task twice


@pytest.mark.parametrize("workers", [1, 2], ids=["1-process", "2-processes"])
def test_many_annotators_get_exactly_n_each_and_lose_nothing(store, tmp_path, workers):
    # With 2 uvicorn processes nothing in-process can coordinate them: only the database's guarantees do.
    n_tasks, n = 30, 3
    add_tasks(store, n_tasks, k=3)
    names = [f"ann{i}" for i in range(12)]
    for name in names:
        store.add_user(name, password="pw-" + name)
    log = str(tmp_path / "srv.log")
    settings = dict(annotators_per_task=n, lease_seconds=30, workers=workers, log_level="info")
    with RankServer(store=store.url, log_path=log, **settings) as srv:
        bots = run_annotators(srv.url, names)
    check_exactly_n(store, bots, n_tasks, n)
    with open(log) as f:
        pids = set(re.findall(r"Started server process \[(\d+)\]", f.read()))
    assert len(pids) == workers


def test_simultaneous_requests_never_lease_one_task_twice(store, tmp_path):
    add_tasks(store, 5)
    names = [f"u{i}" for i in range(20)]
    for name in names:
        store.add_user(name, password="pw-" + name)
    with RankServer(
        store=store.url, annotators_per_task=1, lease_seconds=30, log_path=str(tmp_path / "srv.log")
    ) as srv:
        clients = []
        for name in names:
            c = httpx.Client(base_url=srv.url, timeout=30)
            token = c.post("/api/login", json={"username": name, "password": "pw-" + name}).json()["token"]
            c.headers["Authorization"] = f"Bearer {token}"
            clients.append(c)
        barrier = threading.Barrier(len(clients))
        got: dict[int, int | None] = {}

        def grab(i: int, c: httpx.Client) -> None:
            barrier.wait()
            task = c.post("/api/tasks/next").json()["task"]
            got[i] = task["task_id"] if task else None

        threads = [threading.Thread(target=grab, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        held = [t for t in got.values() if t is not None]
        assert len(got) == 20 and len(held) == 5 and len(set(held)) == 5
        for c in clients:
            c.close()


def test_abandoned_task_comes_back_after_its_lease_expires(store, tmp_path):
    (tid,) = add_tasks(store, 1)
    for name in ("a", "b"):
        store.add_user(name, password="pw-" + name)
    with RankServer(store=store.url, annotators_per_task=1, lease_seconds=1, log_path=str(tmp_path / "srv.log")) as srv:
        a = ScriptedAnnotator(srv.url, "a", "pw-a", length_score)
        b = ScriptedAnnotator(srv.url, "b", "pw-b", length_score)
        a.login()
        b.login()
        assert a.next_task()["task_id"] == tid
        assert b.next_task() is None
        time.sleep(1.2)  # a walked away
        assert b.next_task()["task_id"] == tid
        late = a.submit(tid, [1, 2, 3])
        assert late.status_code == 409 and late.json()["error"] == "lease_lost"
        assert b.submit(tid, [1, 2, 3]).status_code == 200
        a.close()
        b.close()
    assert [r["annotator"] for r in store.rankings()] == ["b"]
