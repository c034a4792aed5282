"""Undo: the ranking is replaced in place (never a second row), exactly-N holds, only its author, only in the window."""

from __future__ import annotations

import threading
import time

import pytest

from reward.rankings.store import Conflict, NotFound
from tests.reward.rankings.conftest import add_tasks


def test_undo_reopens_the_ranking_and_the_next_submit_replaces_it(store):
    (tid,) = add_tasks(store, 1, k=3)
    ann, bob = store.add_user("ann", password="pw12"), store.add_user("bob", password="pw12")
    v = store.next_task(ann, 1, 60)
    first = store.submit(ann, tid, [1, 2, 3], "k1", 1)
    assert store.next_task(bob, 1, 60) is None  # N = 1: the task is complete
    view = store.undo(ann, first["ranking_id"], undo_seconds=30, lease_seconds=60)
    assert view.task_id == tid and view.revise["ranks"] == [1, 2, 3]
    assert [c["position"] for c in view.completions] == [c["position"] for c in v.completions]  # same order shown
    # still complete while being revised: nobody else can take the slot
    assert store.next_task(bob, 1, 60) is None
    replaced = store.submit(ann, tid, [3, 1, 2], "k2", 1)
    assert replaced["ranking_id"] == first["ranking_id"] and replaced["replaced"]
    (row,) = store.rankings()
    assert row["ranks"] == [3, 1, 2] and store.overview(1)["rankings"] == 1
    # a retry of the replacing submit is a replay; a third submit without another undo is refused
    assert store.submit(ann, tid, [3, 1, 2], "k2", 1)["replay"] is True
    with pytest.raises(Conflict, match="already ranked"):
        store.submit(ann, tid, [2, 1, 3], "k3", 1)
    assert len(store.rankings()) == 1


def test_undo_only_by_its_author_and_only_within_the_window(store):
    (tid,) = add_tasks(store, 1)
    ann, bob = store.add_user("ann", password="pw12"), store.add_user("bob", password="pw12")
    store.next_task(ann, 2, 60)
    rid = store.submit(ann, tid, [1, 2, 3], "a", 2)["ranking_id"]
    with pytest.raises(NotFound):
        store.undo(bob, rid, 30, 60)
    with pytest.raises(NotFound):
        store.undo(ann, 10**6, 30, 60)
    time.sleep(0.05)
    with pytest.raises(Conflict, match="no longer"):
        store.undo(ann, rid, 0.01, 60)
    assert store.rankings()[0]["ranks"] == [1, 2, 3]


def test_undo_races_with_other_annotators_and_the_export_keep_exactly_n(store):
    """N = 2: while ann revises, bob and carol race for the second slot; an export reads all along."""
    tids = add_tasks(store, 10, k=3)
    users = {n: store.add_user(n, password="pw12") for n in ("ann", "bob", "carol")}
    n = 2
    acks = []
    for _ in tids:  # ann ranks everything first
        v = store.next_task(users["ann"], n, 60)
        acks.append(store.submit(users["ann"], v.task_id, [1, 2, 3], f"ann{v.task_id}", n))
    errors, reads = [], []

    def revise():
        try:
            for a in acks:
                store.undo(users["ann"], a["ranking_id"], 30, 60)
                store.submit(users["ann"], a["task_id"], [3, 2, 1], f"rev{a['task_id']}", n)
        except Exception as e:  # surfaced below
            errors.append(e)

    def rank(name):
        try:
            while (v := store.next_task(users[name], n, 60)) is not None:
                try:
                    store.submit(users[name], v.task_id, [2, 1, 3], f"{name}{v.task_id}", n)
                except Conflict:
                    pass
        except Exception as e:
            errors.append(e)

    def export_reader():
        for _ in range(20):
            rows = store.rankings()
            reads.append(len(rows) == len({r["ranking_id"] for r in rows}))

    threads = [threading.Thread(target=f, args=a) for f, a in ((revise, ()), (rank, ("bob",)), (rank, ("carol",)))]
    threads.append(threading.Thread(target=export_reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    rows = store.rankings()
    per_task = {}
    for r in rows:
        per_task.setdefault(r["task_id"], []).append(r)
    assert all(len(rs) == n for rs in per_task.values()) and len(per_task) == len(tids)
    assert all(r["ranks"] == [3, 2, 1] for r in rows if r["annotator"] == "ann")
    assert all(reads) and len(rows) == len(tids) * n
