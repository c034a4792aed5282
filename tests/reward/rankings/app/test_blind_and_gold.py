"""What an annotator can reach never shows another annotator's rankings, a gold answer or a blind campaign's policy
names, and a gold task's page is the same HTML as any other task's (route by route in test_route_audit.py)."""

from __future__ import annotations

import json
import re

from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig
from tests.reward.rankings.app.test_app import api_login, browser_login
from tests.reward.rankings.conftest import add_tasks

POLICIES = ["secret-policy-alpha", "secret-policy-beta", "secret-policy-gamma"]
GOLD_ANSWER = [3, 1, 2]


def world(store, tmp_path, gold_rate: float = 0.5):
    """Training tasks, a blind campaign and gold tasks (answer GOLD_ANSWER); bob has ranked; ann's turn."""
    add_tasks(store, 6, k=3)
    tasks = [
        {
            "prompt": f"question c{i}?",
            "completions": [{"text": f"reply {j} of {i}"} for j in range(3)],
            "meta": {"policies": POLICIES, "show_models": True},
        }
        for i in range(4)
    ]
    store.create_campaign("blind", tasks, annotators_per_task=2, meta={"policies": POLICIES})
    gold = [
        {
            "prompt": f"question g{i}?",
            "completions": [{"text": f"option {j} of g{i}"} for j in range(3)],
            "ranks": GOLD_ANSWER,
        }
        for i in range(3)
    ]
    store.add_gold_tasks(gold)
    for name in ("ann", "bob"):
        store.add_user(name, password=f"pw-{name}")
    cfg = RankConfig(store=store.url, output_dir=str(tmp_path / "run"), annotators_per_task=2, gold_rate=gold_rate)
    app = create_app(cfg, store=store)
    bob, auth_b = api_login(app, "bob", "pw-bob")
    for i in range(4):
        task = bob.post("/api/tasks/next", headers=auth_b).json()["task"]
        ranks = list(range(1, len(task["completions"]) + 1))
        bob.post(
            f"/api/tasks/{task['task_id']}/submit", json={"ranks": ranks, "idempotency_key": f"b{i}"}, headers=auth_b
        )
    return app


def leaks(body: str) -> list[str]:
    """What must never reach an annotator, found in a response body."""
    found = [p for p in POLICIES if p in body]
    found += ["gold"] if "gold" in body.lower() else []
    found += ["gold answer"] if re.search(r"\[\s*3,\s*1,\s*2\s*\]", body) else []
    found += ["bob"] if "bob" in body else []
    return found


def test_nothing_an_annotator_reaches_shows_names_gold_answers_or_anothers_rankings(store, tmp_path):
    app = world(store, tmp_path)
    api, auth = api_login(app, "ann", "pw-ann")
    page, csrf = browser_login(app, "ann", "pw-ann")
    bodies = [page.get("/rank").text, page.get("/guidelines").text, api.get("/api/me", headers=auth).text]
    bodies.append(api.get("/api/status", headers=auth).text)
    reply = api.post("/api/tasks/next", headers=auth).json()
    key = 0
    while reply["task"] is not None:  # every task ann gets, through the JSON API and the page
        bodies += [json.dumps(reply), page.get("/rank").text]
        task = reply["task"]
        ranks = list(range(1, len(task["completions"]) + 1))
        key += 1
        done = api.post(
            f"/api/tasks/{task['task_id']}/submit",
            headers=auth,
            json={"ranks": ranks, "idempotency_key": f"a{key}", "next": True},
        )
        bodies.append(done.text)
        undo = api.post(f"/api/rankings/{done.json()['ranking_id']}/undo", headers=auth)
        bodies.append(undo.text)
        api.post(
            f"/api/tasks/{task['task_id']}/submit", headers=auth, json={"ranks": ranks, "idempotency_key": f"r{key}"}
        )
        reply = api.post("/api/tasks/next", headers=auth).json()
    bodies += [page.get("/rank").text, api.get("/api/me", headers=auth).text]
    for path in ("/admin", "/api/admin/quality", "/api/admin/campaigns/blind", "/admin/campaigns/blind"):
        bodies.append(page.get(path, follow_redirects=False).text)  # refused, and the refusal says nothing either
    rows = store.rankings()
    mine = [r for r in rows if r["annotator"] == "ann"]
    assert any(r["gold"] for r in mine) and any(r["campaign"] == "blind" for r in mine)
    assert [(i, leaks(b)) for i, b in enumerate(bodies) if leaks(b)] == []


def normalised(html: str, texts: list[str]) -> str:
    """The page with what differs between any two tasks taken out: their texts, ids, counts and times."""
    for t in sorted(texts, key=len, reverse=True):
        html = html.replace(t, "TEXT")
    return re.sub(r"\d+", "0", html)


def shape(value):
    """The JSON's structure: keys and types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_a_gold_task_is_the_same_html_and_json_as_any_other_task(store, tmp_path):
    app = world(store, tmp_path, gold_rate=1.0)  # gold first, while other work is left
    page, csrf = browser_login(app, "ann", "pw-ann")
    api, auth = api_login(app, "ann", "pw-ann")
    gold, ann = store.gold_answers(), store.authenticate("ann", "pw-ann").id
    pages, replies = {}, {}
    for key in range(12):
        html = page.get("/rank").text
        reply = api.post("/api/tasks/next", headers=auth).json()  # the lease ann holds, renewed
        task = reply["task"]
        assert f'data-task-id="{task["task_id"]}"' in html
        kind = "gold" if task["task_id"] in gold else "other"
        texts = [task["prompt"]] + [c["text"] for c in task["completions"]]
        pages.setdefault(kind, normalised(html, texts))
        replies.setdefault(kind, shape(reply))
        ranks = list(range(1, len(task["completions"]) + 1))
        submit = {"ranks": ranks, "idempotency_key": f"k{key}"}
        assert page.post(f"/api/tasks/{task['task_id']}/submit", json=submit, headers={"X-CSRF-Token": csrf}).is_success
        if len(pages) == 2:
            break
    assert set(pages) == {"gold", "other"} and store.progress(ann, 2)["ranked"] >= 2
    assert pages["gold"] == pages["other"] and replies["gold"] == replies["other"]


def test_campaign_cards_carry_no_model_names_and_policies_move_between_positions(store, tmp_path):
    world(store, tmp_path, gold_rate=0.0)
    _, rows = store.campaign_rankings("blind")
    first_policy = {tuple(r["policies"])[0] for r in rows}
    assert len(first_policy) > 1 or len(rows) < 2  # the stored order is shuffled per task
    info = store.campaigns()[0]
    assert info["meta"]["policies"] == POLICIES
