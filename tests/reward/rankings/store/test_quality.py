"""Campaign and gold tasks in the real store: their own N, kept apart, blind; gold mixed in at a rate, once per
person, never counted as open work, and the pause below a gold accuracy."""

from __future__ import annotations

import random

import pytest

from alignment.common.errors import UserError
from reward.rankings.simulate import SimAnnotator, rank_in_store
from reward.rankings.store import open_store
from tests.reward.rankings.conftest import add_tasks


def campaign_tasks(n: int, policies=("a", "b", "c")) -> list[dict]:
    return [
        {
            "prompt": f"prompt {i}: which answer is best?",
            "completions": [{"text": f"answer {j} to prompt {i}"} for j in range(len(policies))],
            "meta": {"policies": list(policies)},
        }
        for i in range(n)
    ]


def gold_tasks(n: int, k: int = 3) -> list[dict]:
    return [
        {
            "prompt": f"gold {i}?",
            "completions": [{"text": f"gold answer {j} of {i}"} for j in range(k)],
            "ranks": list(range(1, k + 1)),
        }
        for i in range(n)
    ]


def by_text_number(prompt, text: str) -> float:
    """Higher for a lower answer number: answer 0 is the best (what the gold tasks above say too)."""
    return -float(text.split("answer ")[1].split()[0])


def test_campaign_tasks_have_their_own_n_and_never_merge_with_training_tasks(store):
    add_tasks(store, 2, k=3, prefix="train")  # training tasks: the store's N (1)
    same_texts = campaign_tasks(1)[0]
    store.add_task(same_texts["prompt"], same_texts["completions"])  # a training task with a campaign task's texts
    made = store.create_campaign("final", campaign_tasks(4), annotators_per_task=3, meta={"source": "test"})
    assert made["new"] == 4 and store.count_tasks() == 7
    again = store.create_campaign("final", campaign_tasks(4), annotators_per_task=3, meta={})
    assert again["new"] == 0 and store.count_tasks() == 7  # idempotent, like add_tasks
    with pytest.raises(UserError, match="annotators_per_task=3"):
        store.create_campaign("final", campaign_tasks(1), annotators_per_task=2, meta={})
    with pytest.raises(UserError, match="campaign name"):
        store.create_campaign("no spaces", campaign_tasks(1), annotators_per_task=2, meta={})
    done = rank_in_store(store, [SimAnnotator(f"p{i}") for i in range(4)], by_text_number)
    assert sum(done.values()) == 3 + 4 * 3
    rows = store.rankings()
    per_task: dict[int, set] = {}
    for r in rows:
        per_task.setdefault(r["task_id"], set()).add(r["annotator"])
    campaign_rows = [r for r in rows if r["campaign"] == "final"]
    assert len(campaign_rows) == 12 and all(len(per_task[r["task_id"]]) == 3 for r in campaign_rows)
    assert [len(per_task[r["task_id"]]) for r in rows if r["campaign"] is None] == [1, 1, 1]
    info, ranked = store.campaign_rankings("final")
    assert info["tasks"] == 4 and len(ranked) == 12 and ranked[0]["policies"] == ["a", "b", "c"]
    (listed,) = store.campaigns()
    assert listed["complete"] == 4 and listed["rankings"] == 12 and listed["meta"]["annotators_per_task"] == 3
    assert store.overview(1)["rankings_needed"] == 3 + 12 and store.overview(1)["complete"] == 7


def test_a_campaign_task_never_shows_model_names_even_when_its_meta_asks(store):
    task = campaign_tasks(1)[0]
    task["meta"]["show_models"] = True
    task["completions"] = [{**c, "model": name} for c, name in zip(task["completions"], "abc")]
    store.create_campaign("blind", [task], annotators_per_task=1, meta={})
    uid = store.add_user("ann", password="pw-ann")
    view = store.next_task(uid, 1, 60)
    assert all("model" not in c for c in view.completions) and "meta" not in view.as_json()


def test_gold_tasks_come_at_the_rate_once_per_person_and_are_not_open_work(store):
    add_tasks(store, 40, k=3)
    store.add_gold_tasks(gold_tasks(6))
    store.set_gold_policy(rate=0.25)
    people = [SimAnnotator("ann", temperature=0.1), SimAnnotator("bob", temperature=0.1)]
    uid = store.add_user("ann", password="pw")
    assert store.progress(uid, 1)["available"] == 40  # gold tasks are not counted as work left
    done = rank_in_store(store, people, by_text_number)
    rows = store.rankings()
    gold_rows = [r for r in rows if r["gold"]]
    # Each person saw at most every gold task once; about a quarter of what they ranked was gold.
    for name in ("ann", "bob"):
        mine = [r["task_id"] for r in gold_rows if r["annotator"] == name]
        assert len(mine) == len(set(mine)) <= 6
    assert 3 <= len(gold_rows) <= 12 and sum(done.values()) == 40 + len(gold_rows)
    report = store.gold_report()
    assert set(report) == {"ann", "bob"} and all(r["accuracy"] > 0.9 for r in report.values())
    assert store.progress(uid, 1)["available"] == 0


def test_gold_stops_when_the_other_work_is_done(store):
    store.add_gold_tasks(gold_tasks(3))
    store.set_gold_policy(rate=1.0)
    uid = store.add_user("ann", password="pw")
    assert store.next_task(uid, 1, 60) is None  # gold tasks alone are never a queue
    add_tasks(store, 1)
    view = store.next_task(uid, 1, 60, random.Random(0))
    assert view.task_id in store.gold_answers()  # rate 1: the gold task first, while other work is left


def test_a_careless_annotator_is_paused_below_the_gold_line_and_resumed_by_an_admin(store):
    add_tasks(store, 40, k=4)
    store.add_gold_tasks(gold_tasks(10, k=4))
    store.set_gold_policy(rate=0.4, pause_below=0.7, min_answers=4)  # paused in 19 of 20 seeds
    people = [SimAnnotator("careful", temperature=0.2), SimAnnotator("careless", careless=True)]
    done = rank_in_store(store, people, by_text_number, seed=3)
    report = store.gold_report()
    assert report["careless"]["paused"] and not report["careful"]["paused"]
    assert done["careless"] < done["careful"]  # paused early: the careful annotator ranked the rest
    careless_id = next(u["id"] for u in store.list_users() if u["name"] == "careless")
    assert store.next_task(careless_id, 1, 60) is None
    progress = store.progress(careless_id, 1)
    assert progress["available"] == 0 and progress["paused"]
    store.resume_annotator("careless")
    assert not store.gold_report()["careless"]["paused"]


def test_bad_gold_answers_are_one_line_naming_the_task(store):
    with pytest.raises(UserError, match="gold task 2: expected 3 ranks"):
        store.add_gold_tasks([gold_tasks(1)[0], {**gold_tasks(1)[0], "ranks": [1, 2]}])
    with pytest.raises(UserError, match="ties every completion"):
        store.add_gold_tasks([{**gold_tasks(1)[0], "ranks": [1, 1, 1]}])
    with pytest.raises(UserError, match="rate"):
        store.set_gold_policy(rate=1.5)
    assert store.count_tasks() == 0


def test_an_old_store_gains_campaign_and_gold_columns(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from reward.rankings.store.engine import _alembic_config, make_engine

    path = str(tmp_path / "r.db")
    engine = make_engine(path)
    with engine.connect() as c:
        command.upgrade(_alembic_config(c), "0004")
        c.commit()
        c.execute(text("INSERT INTO prompts (hash, text, is_chat, created_at) VALUES ('h', 'old', 0, 0)"))
        c.execute(text("INSERT INTO tasks (key, prompt_id, meta, n_done, created_at) VALUES ('k', 1, '{}', 0, 0)"))
        c.execute(text("INSERT INTO leases (task_id, acquired_at, expires_at) VALUES (1, 0, 0)"))
        c.commit()
    engine.dispose()
    store = open_store(path)
    uid = store.add_user("ann", password="pw")
    assert store.next_task(uid, 1, 60).task_id == 1  # an old task: no campaign, not gold, the store's N
    assert store.overview(1)["gold_tasks"] == 0
    store.close()


@pytest.mark.postgres
def test_campaigns_gold_and_the_pause_on_postgresql(pg_url):
    store = open_store(pg_url)
    try:
        add_tasks(store, 60, k=4, prefix="train")
        store.create_campaign("final", campaign_tasks(4), annotators_per_task=3, meta={})
        store.add_gold_tasks(gold_tasks(8, k=4))
        store.set_gold_policy(rate=0.3, pause_below=0.7, min_answers=3)
        people = [SimAnnotator(f"careful{i}", temperature=0.2) for i in range(3)] + [SimAnnotator("x", careless=True)]
        rank_in_store(store, people, by_text_number, seed=1)
        rows = store.rankings()
        per_task: dict[int, set] = {}
        for r in rows:
            per_task.setdefault(r["task_id"], set()).add(r["annotator"])
        assert all(len(per_task[r["task_id"]]) == 3 for r in rows if r["campaign"] == "final")
        assert all(len(per_task[r["task_id"]]) == 1 for r in rows if r["campaign"] is None and not r["gold"])
        report = store.gold_report()
        assert report["x"]["paused"] and store.overview(1)["complete"] == 64, report
    finally:
        store.close()
