"""User names come from a safe alphabet and differ in more than case, so no account can pass for another."""

from __future__ import annotations

import threading

import pytest

from alignment.common.errors import UserError
from reward.rankings.store import open_store

LOOK_ALIKES = [
    ("\u0430nn", r"'\u0430nn'"),  # Cyrillic a
    ("r\xf6\xf6t", r"'r\xf6\xf6t'"),
    ("ann\u200b", r"'ann\u200b'"),  # zero-width space
    ("\u217fax", r"'\u217fax'"),  # Roman numeral one thousand, looks like m
    ("ann ", "'ann '"),
    ("a\tb", r"'a\tb'"),
    ("-admin", "'-admin'"),
    (".hidden", "'.hidden'"),
    ("", "''"),
    ("x" * 65, "'" + "x" * 65 + "'"),
]


@pytest.mark.parametrize("name, shown", LOOK_ALIKES, ids=[ascii(n)[:12] for n, _ in LOOK_ALIKES])
def test_names_outside_the_safe_alphabet_are_refused_and_shown_escaped(store, name, shown):
    store.add_user("ann", password="pw-ann")
    with pytest.raises(UserError) as err:
        store.add_user(name, password="pw-x")
    assert str(err.value).startswith(f"user name {shown} is not allowed") and "\n" not in str(err.value)
    assert [u["name"] for u in store.list_users()] == ["ann"]


def test_safe_names_are_kept_as_given_and_compared_ignoring_case(store):
    for name in ("ann", "Bob.Smith-2", "x_1", "7", "a" * 64):
        store.add_user(name, password="pw-1234")
    for taken, by in (("ANN", "ann"), ("bob.smith-2", "Bob.Smith-2")):
        with pytest.raises(UserError, match=f"user name '{taken}' is taken by '{by}'"):
            store.add_user(taken, password="pw-1234")
    with pytest.raises(UserError, match="user 'ann' already exists"):
        store.add_user("ann", password="pw-1234")
    assert store.authenticate("Bob.Smith-2", "pw-1234").name == "Bob.Smith-2"


def add_case_variants_at_once(url: str) -> list[str]:
    """Eight threads, each with its own store (as separate workers), add the same name in eight spellings."""
    variants = ["carol", "Carol", "CAROL", "cArol", "caRol", "carOl", "caroL", "CaRoL"]
    stores = [open_store(url, pool_size=1) for _ in variants]
    start, added = threading.Barrier(len(variants)), []

    def add(store, name):
        start.wait()
        try:
            store.add_user(name, password="pw-1234")
            added.append(name)
        except UserError:
            pass

    threads = [threading.Thread(target=add, args=pair) for pair in zip(stores, variants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [u["name"].lower() for u in stores[0].list_users()]
    for s in stores:
        s.close()
    assert len(added) == 1 and names.count("carol") == 1, (added, names)
    return added


def test_case_variants_added_at_once_make_one_account(tmp_path):
    open_store(str(tmp_path / "r.db")).close()
    add_case_variants_at_once(str(tmp_path / "r.db"))


@pytest.mark.postgres
def test_case_variants_added_at_once_make_one_account_on_postgresql(pg_url):
    add_case_variants_at_once(pg_url)
