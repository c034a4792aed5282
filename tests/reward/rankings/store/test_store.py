"""The ranking store's API: idempotent tasks, users and hashed secrets, leases, exactly-N, idempotent submits."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from alignment.common.errors import UserError
from reward.rankings.store import Conflict, InvalidRanking, normalize_ranks, open_store
from tests.reward.rankings.conftest import add_tasks


def test_add_task_is_idempotent_on_prompt_and_texts(store):
    comps = [{"text": "a", "model": "m", "gen": {"top_p": 0.9}, "seed": 1}, {"text": "b"}, {"text": "c"}]
    first = store.add_task("hello", comps, {"k": 3})
    again = store.add_task("hello", list(reversed(comps)))  # same texts in another order: same task
    other = store.add_task("hello", comps[:2])
    assert first == again != other
    assert store.count_tasks() == 2


def test_chat_prompt_round_trips_and_bad_input_names_the_problem(store):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    tid = store.add_task(msgs, [{"text": "x"}, {"text": "y"}])
    uid = store.add_user("ann", password="pw12")
    view = store.next_task(uid, 1, 60)
    assert view.task_id == tid and view.is_chat and view.prompt == msgs
    with pytest.raises(UserError, match="at least 2 completions"):
        store.add_task("p", [{"text": "only one"}])
    with pytest.raises(UserError, match="completion 1"):
        store.add_task("p", [{"text": "a"}, {"txt": "b"}])
    with pytest.raises(UserError, match="prompt must be"):
        store.add_task([{"content": "no role"}], [{"text": "a"}, {"text": "b"}])


def test_an_old_store_is_migrated_on_open_and_keeps_its_data(tmp_path):
    from alembic import command

    from reward.rankings.store.engine import _alembic_config, make_engine

    path = str(tmp_path / "r.db")
    engine = make_engine(path)
    with engine.connect() as c:
        command.upgrade(_alembic_config(c), "0001")  # a store written by the first release
        c.commit()
        c.execute(text("INSERT INTO prompts (hash, text, is_chat, created_at) VALUES ('h', 'old prompt', 0, 0)"))
        c.execute(text("INSERT INTO tasks (key, prompt_id, meta, n_done, created_at) VALUES ('k', 1, '{}', 0, 0)"))
        c.execute(text("INSERT INTO users (name, role, active, created_at) VALUES ('u', 'annotator', 1, 0)"))
        for _ in range(3):  # the first release let one person flag a task again and again
            c.execute(
                text("INSERT INTO flags (task_id, user_id, kind, comment, created_at) VALUES (1, 1, 'unsafe', '', 0)")
            )
        c.commit()
    engine.dispose()
    s = open_store(path)
    with s.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        assert c.execute(text("SELECT COUNT(*) FROM flags")).scalar() == 1  # repeats collapsed to one
        assert c.execute(text("SELECT priority FROM tasks")).scalar() == 0  # tasks from before 0004: priority 0
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert "ix_tasks_queue" in [r[1] for r in c.execute(text("PRAGMA index_list('tasks')"))]
    assert s.count_tasks() == 1
    add_tasks(s, 2)
    s.close()
    assert open_store(path).count_tasks() == 3


def test_passwords_and_tokens_are_stored_hashed(store):
    store.add_user("ann", password="correct horse")
    token, _ = store.create_token("ann")
    with store.engine.connect() as c:
        dump = repr(c.execute(text("SELECT * FROM users")).all()) + repr(c.execute(text("SELECT * FROM tokens")).all())
    assert "correct horse" not in dump and token not in dump and "scrypt$" in dump
    assert store.authenticate("ann", "correct horse").name == "ann"
    assert store.authenticate("ann", "wrong") is None and store.authenticate("nobody", "x") is None
    assert store.user_for_token(token).name == "ann" and store.user_for_token(token + "x") is None
    with pytest.raises(UserError, match="already exists"):
        store.add_user("ann", password="pw")
    with pytest.raises(UserError, match="role must be"):
        store.add_user("bob", role="owner")


def test_set_password_ends_sessions_and_expired_tokens_fail(store):
    store.add_user("ann", password="old1")
    session, csrf = store.create_token("ann", kind="session")
    assert csrf and store.user_for_token(session).csrf == csrf
    store.set_password("ann", "new1")
    assert store.user_for_token(session) is None
    assert store.authenticate("ann", "new1") is not None
    short, _ = store.create_token("ann", ttl_seconds=0.01)
    time.sleep(0.02)
    assert store.user_for_token(short) is None


def test_a_leased_task_is_not_offered_to_anyone_else(store):
    (tid,) = add_tasks(store, 1)
    a, b = store.add_user("a", password="pw12"), store.add_user("b", password="pw12")
    view = store.next_task(a, 2, 60)
    assert view.task_id == tid
    assert store.next_task(b, 2, 60) is None
    # Asking again returns the same lease and the same order shown (a page reload).
    again = store.next_task(a, 2, 60)
    assert (again.view_id, again.completions) == (view.view_id, view.completions)


def test_abandoned_lease_expires_and_the_late_submit_is_refused(store):
    (tid,) = add_tasks(store, 1)
    a, b = store.add_user("a", password="pw12"), store.add_user("b", password="pw12")
    store.next_task(a, 2, lease_seconds=0.05)
    time.sleep(0.08)
    assert store.next_task(b, 2, 60).task_id == tid
    with pytest.raises(Conflict) as e:
        store.submit(a, tid, [1, 2, 3], "late", 2)
    assert e.value.code == "lease_lost"
    assert store.submit(b, tid, [1, 2, 3], "b1", 2)["replay"] is False


def test_expired_but_unclaimed_lease_still_lets_its_holder_submit(store):
    (tid,) = add_tasks(store, 1)
    a = store.add_user("a", password="pw12")
    store.next_task(a, 1, lease_seconds=0.01)
    time.sleep(0.02)
    assert store.submit(a, tid, [3, 1, 2], "k", 1)["ranks"] == [3, 1, 2]


def test_exactly_n_distinct_annotators_and_nobody_twice(store):
    tids = add_tasks(store, 3)
    users = [store.add_user(f"u{i}", password="pw12") for i in range(4)]
    n = 2
    for u in users:
        while (view := store.next_task(u, n, 60)) is not None:
            store.submit(u, view.task_id, [1, 2, 3], f"{u}-{view.task_id}", n)
    rows = store.rankings()
    per_task = {t: [r["annotator"] for r in rows if r["task_id"] == t] for t in tids}
    assert all(len(names) == n == len(set(names)) for names in per_task.values())
    assert store.overview(n)["complete"] == 3
    # The holder of a task that is already complete is told so, and nothing is added.
    with pytest.raises(Conflict):
        store.submit(users[0], tids[0], [1, 2, 3], "again", n)
    assert len(store.rankings()) == 6


def test_submit_is_idempotent_and_records_order_shown(store):
    (tid,) = add_tasks(store, 1)
    a = store.add_user("a", password="pw12")
    view = store.next_task(a, 1, 60)
    first = store.submit(a, tid, [2, 1, 3], "key-1", 1)
    retry = store.submit(a, tid, [2, 1, 3], "key-1", 1)
    assert retry == {**first, "replay": True}
    (row,) = store.rankings()
    assert row["order_shown"] == [c["position"] for c in view.completions]
    assert row["ranks"] == [2, 1, 3] and row["annotator"] == "a"
    b = store.add_user("b", password="pw12")
    with pytest.raises(Conflict, match="another user"):
        store.submit(b, tid, [1, 2, 3], "key-1", 1)


def test_rank_validation_and_tie_normalisation(store):
    (tid,) = add_tasks(store, 1)
    a = store.add_user("a", password="pw12")
    store.next_task(a, 1, 60)
    with pytest.raises(InvalidRanking, match="expected 3"):
        store.submit(a, tid, [1, 2], "k", 1)
    with pytest.raises(InvalidRanking, match="from 1 to 3"):
        store.submit(a, tid, [0, 1, 2], "k", 1)
    with pytest.raises(InvalidRanking, match="ties are not allowed"):
        store.submit(a, tid, [1, 1, 2], "k", 1, allow_ties=False)
    # Tied second place: both get 2 (competition ranking), whatever number the client used for it.
    assert store.submit(a, tid, [3, 1, 3], "k", 1)["ranks"] == [2, 1, 2]
    assert normalize_ranks([1, 1, 2, 2], 4, True) == [1, 1, 3, 3]
    assert normalize_ranks([3, 1, 2], 3, False) == [3, 1, 2]


def test_skipped_and_flagged_tasks_are_not_offered_again(store):
    add_tasks(store, 3)
    a, b = store.add_user("a", password="pw12"), store.add_user("b", password="pw12")
    t1 = store.next_task(a, 1, 60).task_id
    store.skip(a, t1)
    t2 = store.next_task(a, 1, 60).task_id
    assert t2 != t1
    store.flag(a, t2, "unsafe", "contains <b>bad</b> advice")
    t3 = store.next_task(a, 1, 60).task_id
    assert t3 not in (t1, t2)
    assert store.progress(a, 1) == {"ranked": 0, "skipped": 1, "available": 1}
    # Skips and flags release the lease, so others get the task.
    assert store.next_task(b, 1, 60).task_id in (t1, t2)
    (flag,) = store.flags()
    assert (flag["kind"], flag["comment"], flag["user"]) == ("unsafe", "contains <b>bad</b> advice", "a")
    with pytest.raises(InvalidRanking, match="flag kind"):
        store.flag(a, t3, "boring")
    actions = [e["action"] for e in store.audit_log()]
    assert "skip" in actions and "flag" in actions


def test_a_submit_refused_as_complete_gives_the_lease_back(store):
    (tid,) = add_tasks(store, 1)
    a, b = store.add_user("a", password="pw12"), store.add_user("b", password="pw12")
    store.next_task(a, 1, 60)
    # N lowered to 0 behind a's back (e.g. a server restarted with another config): the task is complete.
    with pytest.raises(Conflict) as e:
        store.submit(a, tid, [1, 2, 3], "k", 0)
    assert e.value.code == "task_complete"
    assert store.next_task(b, 1, 60).task_id == tid  # a's lease was released, not left to expire


def test_add_tasks_in_one_transaction_is_idempotent_too(store):
    batch = [{"prompt": f"p{i}", "completions": [{"text": "a"}, {"text": f"b{i}"}], "meta": {"i": i}} for i in range(5)]
    ids = store.add_tasks(batch)
    assert (
        len(set(ids)) == 5
        and store.add_tasks(batch) == ids
        and store.add_task("p0", [{"text": "a"}, {"text": "b0"}]) == ids[0]
    )
    with pytest.raises(UserError, match="task 2: a task needs at least 2"):
        store.add_tasks(batch[:2] + [{"prompt": "x", "completions": [{"text": "only"}]}])
    assert store.count_tasks() == 5


def test_renew_extends_only_the_holders_lease(store):
    (tid,) = add_tasks(store, 1)
    a, b = store.add_user("a", password="pw12"), store.add_user("b", password="pw12")
    store.next_task(a, 1, lease_seconds=0.05)
    assert store.renew(a, tid, 60) and not store.renew(b, tid, 60)
    time.sleep(0.08)
    assert store.next_task(b, 1, 60) is None  # renewed, so still a's
