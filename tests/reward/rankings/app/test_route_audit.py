"""Every route for every role: auth required, role checks, CSRF for cookie writes, writes checked against who holds what.

The matrix must name every route the app serves (a new route without a row fails the test). Roles:
anon (nothing), ann/bob/root by bearer token, ann by session cookie without the CSRF token (csrf-less).
`python -m pytest tests/reward/rankings/app/test_route_audit.py -s` prints the table.
"""

from __future__ import annotations

import re

import pytest
from starlette.routing import Mount

from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig
from tests.reward.rankings.app.test_app import api_login, browser_login
from tests.reward.rankings.conftest import add_tasks, local_client

# (method, path template, body, {role: expected status}); {task} is a task ann holds, {other} one nobody
# holds, {ranking} ann's ranking, {bob_ranking} bob's, {flag} a flag.
MATRIX = [
    ("POST", "/api/login", {"username": "ann", "password": "wrong"}, {"anon": 401}),
    ("GET", "/api/me", None, {"anon": 401, "ann": 200, "root": 200}),
    ("GET", "/api/status", None, {"anon": 401, "ann": 200, "root": 200}),
    ("POST", "/api/tasks/next", {}, {"anon": 401, "csrf-less": 403, "ann": 200}),
    ("POST", "/api/tasks/{task}/renew", {}, {"anon": 401, "csrf-less": 403, "bob": 409, "ann": 200}),
    ("POST", "/api/tasks/{task}/submit", {"ranks": [1, 2, 3], "idempotency_key": "x"},
     {"anon": 401, "csrf-less": 403, "bob": 409}),
    ("POST", "/api/tasks/{task}/flag", {"kind": "unsafe"}, {"anon": 401, "csrf-less": 403, "bob": 409}),
    ("POST", "/api/tasks/{other}/flag", {"kind": "unsafe"}, {"ann": 409}),
    ("POST", "/api/tasks/{task}/release", {}, {"anon": 401, "csrf-less": 403, "bob": 409}),
    ("POST", "/api/tasks/{other}/skip", {}, {"anon": 401, "csrf-less": 403, "bob": 200}),
    ("POST", "/api/rankings/{ranking}/undo", {}, {"anon": 401, "csrf-less": 403, "bob": 404, "root": 404, "ann": 200}),
    ("POST", "/api/logout", {}, {"anon": 401, "csrf-less": 403}),
    ("GET", "/api/admin/stats", None, {"anon": 401, "ann": 403, "root": 200}),
    ("GET", "/api/admin/users", None, {"anon": 401, "ann": 403, "root": 200}),
    ("POST", "/api/admin/users", {"name": "eve", "password": "pw-eve"}, {"anon": 401, "ann": 403, "root": 200}),
    ("POST", "/api/admin/users/{name}/{action}", {}, {"anon": 401, "ann": 403, "root": 200}),
    ("POST", "/api/admin/flags/{flag}", {"status": "dismissed"}, {"anon": 401, "ann": 403, "root": 200}),
    ("POST", "/api/admin/export", {}, {"anon": 401, "ann": 403, "root": 200}),
    ("GET", "/api/admin/export.zip", None, {"anon": 401, "ann": 403, "root": 200}),
    ("GET", "/", None, {"anon": 303}),
    ("GET", "/login", None, {"anon": 200}),
    ("GET", "/favicon.ico", None, {"anon": 200}),
    ("POST", "/login", {}, {"anon": 403}),  # no login CSRF cookie
    ("POST", "/logout", {}, {"anon": 303, "csrf-less": 403}),
    ("GET", "/rank", None, {"anon": 303, "csrf-less": 200}),
    ("GET", "/guidelines", None, {"anon": 303, "csrf-less": 200}),
    ("POST", "/tasks/{task}/skip", {}, {"anon": 303, "csrf-less": 403}),
    ("POST", "/tasks/{task}/flag", {"kind": "unsafe"}, {"anon": 303, "csrf-less": 403}),
    ("GET", "/admin", None, {"anon": 303, "csrf-less": 403}),
    ("GET", "/admin/export.zip", None, {"anon": 303, "csrf-less": 403}),
    ("POST", "/admin/export", {}, {"anon": 303, "csrf-less": 403}),
    ("POST", "/admin/users", {"name": "x", "password": "pw-x"}, {"anon": 303, "csrf-less": 403}),
    ("POST", "/admin/users/{name}/{action}", {}, {"anon": 303, "csrf-less": 403}),
    ("POST", "/admin/flags/{flag}", {"status": "confirmed"}, {"anon": 303, "csrf-less": 403}),
    # gold tasks, annotator quality and campaigns (app/quality.py): admins only
    ("GET", "/api/admin/quality", None, {"anon": 401, "ann": 403, "root": 200}),
    ("POST", "/api/admin/gold", {"prompt": "p?", "completions": ["x", "y"], "ranks": [2, 1]},
     {"anon": 401, "csrf-less": 403, "ann": 403, "root": 200}),
    ("POST", "/api/admin/annotators/{name}/resume", {}, {"anon": 401, "csrf-less": 403, "ann": 403, "root": 200}),
    ("GET", "/api/admin/campaigns/{campaign}", None, {"anon": 401, "ann": 403, "root": 200}),
    ("POST", "/admin/gold", {"prompt": "p", "completions": "a\n---\nb", "ranks": "1 2"}, {"anon": 303, "csrf-less": 403}),
    ("POST", "/admin/annotators/{name}/resume", {}, {"anon": 303, "csrf-less": 403}),
    ("GET", "/admin/campaigns/{campaign}", None, {"anon": 303, "csrf-less": 403}),
]  # fmt: skip


def app_routes(routes) -> set[tuple[str, str]]:
    """(method, path) of every route, through included routers (static files excluded)."""
    found = set()
    for r in routes:
        if isinstance(r, Mount):
            continue
        if hasattr(r, "original_router"):
            found |= app_routes(r.original_router.routes)
        else:
            found |= {(m, r.path) for m in r.methods - {"HEAD"}}
    return found


@pytest.fixture
def world(store, tmp_path):
    store.add_user("ann", password="pw-ann")
    store.add_user("bob", password="pw-bob")
    store.add_user("root", role="admin", password="pw-root")
    t1, t2, t3 = add_tasks(store, 3)
    app = create_app(RankConfig(store=store.url, output_dir=str(tmp_path / "run"), annotators_per_task=2), store=store)
    clients = {"anon": local_client(app)}
    for name in ("ann", "bob", "root"):
        client, auth = api_login(app, name, "pw-" + name)
        client.headers.update(auth)
        clients[name] = client
    clients["csrf-less"] = browser_login(app, "ann", "pw-ann")[0]
    ids = {"name": "bob", "action": "revoke"}
    # bob ranks one task; ann ranks one (for undo) and then holds another
    b = clients["bob"].post("/api/tasks/next").json()["task"]["task_id"]
    ids["bob_ranking"] = clients["bob"].post(f"/api/tasks/{b}/submit", json={"ranks": [1, 2, 3], "idempotency_key": "b"}).json()["ranking_id"]  # fmt: skip
    a = clients["ann"].post("/api/tasks/next").json()["task"]["task_id"]
    ids["ranking"] = clients["ann"].post(f"/api/tasks/{a}/submit", json={"ranks": [1, 2, 3], "idempotency_key": "a"}).json()["ranking_id"]  # fmt: skip
    ids["task"] = clients["ann"].post("/api/tasks/next").json()["task"]["task_id"]
    ids["other"] = next(t for t in (t1, t2, t3) if t != ids["task"])  # nobody holds it
    ids["flag"] = store.flag(store.authenticate("root", "pw-root").id, ids["other"], "unsafe", admin=True)
    clients["root"].post("/api/admin/export")  # so the download exists
    ids["campaign"] = blind_campaign(store)
    return app, clients, ids


def blind_campaign(store) -> str:
    """A campaign with one ranking (by carol, who skips the training tasks on her way to it) and a gold task."""
    task = {"prompt": "campaign prompt?", "completions": [{"text": "c1"}, {"text": "c2"}]}
    made = store.create_campaign("final", [{**task, "meta": {"policies": ["policy-sft", "policy-ppo"]}}], 2, meta={})
    store.add_gold_tasks([{"prompt": "gold prompt?", "completions": [{"text": "g1"}, {"text": "g2"}], "ranks": [2, 1]}])
    carol = store.add_user("carol", password="pw-carol")
    while (view := store.next_task(carol, 2, 60)) is not None:
        if view.meta.get("campaign") == made["name"]:
            store.submit(carol, view.task_id, [1, 2], "carol-campaign", 2)
            break
        store.skip(carol, view.task_id)
    return made["name"]


def test_every_route_is_in_the_matrix(world):
    app, _, _ = world
    covered = {(m, re.sub(r"\{(task|other|ranking|bob_ranking|flag)\}", lambda x: "{" + _param(x.group(1)) + "}", p)) for m, p, _, _ in MATRIX}  # fmt: skip
    missing = app_routes(app.routes) - covered
    assert not missing, f"routes without an audit row: {sorted(missing)}"


def _param(name: str) -> str:
    return {"task": "task_id", "other": "task_id", "ranking": "ranking_id", "bob_ranking": "ranking_id", "flag": "flag_id"}[name]  # fmt: skip


def test_route_by_role(world):
    _, clients, ids = world
    rows = []
    for method, template, body, expect in MATRIX:
        path = template.format(**ids)
        for role, status in expect.items():
            client = clients[role]
            kwargs = {"follow_redirects": False}
            if body is not None:
                kwargs["json" if path.startswith("/api") else "data"] = body
            got = client.request(method, path, **kwargs).status_code
            rows.append((method, template, role, status, got))
    print(f"\n{'route':<44} {'role':<10} expected observed")  # shown with -s
    for method, template, role, status, got in rows:
        print(f"{method + ' ' + template:<44} {role:<10} {status:<8} {got}")
    wrong = [r for r in rows if r[3] != r[4]]
    assert not wrong, wrong
