"""Task priority (active ranking): within a fill level the highest acquisition score is served first, then age."""

from __future__ import annotations

import pytest

from alignment.common.errors import UserError
from reward.rankings.store import open_store


def add(store, name: str, priority=None) -> int:
    extra = {} if priority is None else {"priority": priority}
    return store.add_tasks([{"prompt": name, "completions": [{"text": f"{name} a"}, {"text": f"{name} b"}], **extra}])[
        0
    ]


def serving_order(store, users: int) -> list[int]:
    """The task each of `users` fresh annotators is leased, one after another (each holds its lease)."""
    ids = [store.add_user(f"u{i}", password="pw12") for i in range(users)]
    return [store.next_task(uid, 1, 600).task_id for uid in ids]


def check_priority_order(store, ties_by_age: bool = True) -> None:
    old = add(store, "old")  # priority 0 by default
    low = add(store, "low", -1.5)
    high = add(store, "high", 3.0)
    tie_first, tie_second = add(store, "tie 1", 2.0), add(store, "tie 2", 2.0)
    order = serving_order(store, 5)
    if not ties_by_age:  # PostgreSQL spreads concurrent claimers over equal-priority tasks
        order[1:3] = sorted(order[1:3])
    assert order == [high, tie_first, tie_second, old, low]


def test_highest_priority_is_served_first_then_oldest(store):
    check_priority_order(store)


def test_fill_level_still_comes_before_priority(store):
    """Overlap sets complete first (N = 2): a half-ranked task of low priority before a fresh high one."""
    low, high = add(store, "low", 0.1), add(store, "high", 9.0)
    first = store.add_user("first", password="pw12")
    view = store.next_task(first, 2, 600)
    assert view.task_id == high
    store.submit(first, high, [1, 2], "key-1", 2)
    second = store.add_user("second", password="pw12")
    assert store.next_task(second, 2, 600).task_id == high  # high has 1 of 2 rankings: it is fuller
    assert store.next_task(first, 2, 600).task_id == low  # first already ranked high


def test_bad_priority_is_one_line_and_nothing_is_written(store):
    for bad in (float("nan"), float("inf"), "high", True):
        with pytest.raises(UserError, match="task 1: priority must be a finite number"):
            store.add_tasks([
                {"prompt": "ok", "completions": [{"text": "a"}, {"text": "b"}]},
                {"prompt": "p", "completions": [{"text": "a"}, {"text": "b"}], "priority": bad},
            ])  # fmt: skip
    assert store.count_tasks() == 0


def test_re_adding_a_task_keeps_its_first_priority(store):
    first = add(store, "same", 5.0)
    assert add(store, "same", -5.0) == first
    assert add(store, "other", 1.0) != first
    assert serving_order(store, 2) == [first, first + 1]


@pytest.mark.postgres
def test_priority_order_on_postgres(pg_url):
    store = open_store(pg_url)
    try:
        check_priority_order(store, ties_by_age=False)
    finally:
        store.close()
