"""The ranking server on a real full disk (a small tmpfs): a submit is answered 507 with a one-line detail that
says the disk is full, nothing is saved, and the same submit goes through once space is freed."""

from __future__ import annotations

import os

import httpx

from reward.rankings.app.process import RankServer
from reward.rankings.store import open_store
from tests.reward.rankings.conftest import add_tasks


def test_a_submit_on_a_full_disk_is_507_and_retrying_after_freeing_space_saves_it_once(small_disk):
    disk = small_disk("2m")
    store_path = os.path.join(disk.path, "rankings.db")
    store = open_store(store_path)
    store.add_user("ann", password="pw-ann")
    add_tasks(store, 3, k=2)
    store.close()
    with RankServer(store=store_path, annotators_per_task=1) as server, httpx.Client(base_url=server.url) as http:
        token = http.post("/api/login", json={"username": "ann", "password": "pw-ann"}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        task = http.post("/api/tasks/next", headers=auth).json()["task"]
        disk.fill(leave_bytes=0)
        submit = {"ranks": [1, 2], "idempotency_key": "k-1"}
        r = http.post(f"/api/tasks/{task['task_id']}/submit", json=submit, headers=auth)
        assert r.status_code == 507, r.text
        assert r.json() == {
            "error": "store_full",
            "detail": "the server's disk is full: nothing was saved; retry once space is freed",
        }
        assert r.headers["x-frame-options"] == "DENY"  # an answer of the app, not a crash
        os.remove(os.path.join(disk.path, "filler"))
        r = http.post(f"/api/tasks/{task['task_id']}/submit", json=submit, headers=auth)
        assert r.status_code == 200 and r.json()["replay"] is False, r.text
    store = open_store(store_path, create=False)
    assert [row["task_id"] for row in store.rankings()] == [task["task_id"]]
    store.close()
