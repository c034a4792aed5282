"""The ranking app through FastAPI's TestClient: login, CSRF, auth, XSS escaping, ranking, admin, JSON API, CLI."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from reward.rankings.app.server import create_app
from reward.rankings.config import RankConfig
from tests.reward.rankings.conftest import add_tasks, local_client

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def browser_login(app, name, password) -> tuple[TestClient, str]:
    """A TestClient logged in through the login form; returns it and its CSRF token."""
    client = local_client(app)
    page = client.get("/login")
    login_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": name, "password": password, "csrf_token": login_csrf, "next": "/rank"})
    assert r.status_code == 200 and r.url.path == "/rank"
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', r.text).group(1)
    return client, csrf


def api_login(app, name, password) -> tuple[TestClient, dict]:
    client = local_client(app)
    r = client.post("/api/login", json={"username": name, "password": password})
    assert r.status_code == 200
    return client, {"Authorization": f"Bearer {r.json()['token']}"}


def test_unauthenticated_requests_are_refused(app, store):
    add_tasks(store, 1)
    anon = local_client(app)
    r = anon.get("/rank", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert anon.get("/admin", follow_redirects=False).status_code == 303
    for path in ("/api/tasks/next", "/api/tasks/1/submit", "/api/tasks/1/skip", "/api/admin/export"):
        assert anon.post(path, json={"ranks": [1, 2, 3], "idempotency_key": "k"}).status_code == 401
    assert anon.get("/api/status").status_code == 401
    assert anon.post("/api/tasks/next", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert anon.post("/api/login", json={"username": "ann", "password": "wrong"}).status_code == 401
    assert store.rankings() == []


def test_login_form_needs_its_csrf_cookie_and_session_cookie_is_httponly_strict(app):
    client = local_client(app)
    r = client.post("/login", data={"username": "ann", "password": "pw-ann", "csrf_token": "forged"})
    assert r.status_code == 403
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    bad = client.post(
        "/login", data={"username": "ann", "password": "nope", "csrf_token": token}, follow_redirects=False
    )
    assert "error=1" in bad.headers["location"] and "rlhf_session" not in bad.headers.get("set-cookie", "")
    form = {"username": "ann", "password": "pw-ann", "csrf_token": token, "next": "//evil.example"}
    r = client.post("/login", data=form, follow_redirects=False)
    assert r.headers["location"] == "/rank"  # no open redirect off-site
    cookie = r.headers["set-cookie"]
    assert "rlhf_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_cookie_writes_without_csrf_token_are_refused(app, store):
    (tid,) = add_tasks(store, 1)
    client, csrf = browser_login(app, "ann", "pw-ann")
    body = {"ranks": [1, 2, 3], "idempotency_key": "k1"}
    assert client.post(f"/api/tasks/{tid}/submit", json=body).status_code == 403
    assert client.post(f"/api/tasks/{tid}/submit", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post(f"/tasks/{tid}/skip", data={"csrf_token": "wrong"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert store.rankings() == [] and store.progress(1, 2)["skipped"] == 0
    r = client.post(f"/api/tasks/{tid}/submit", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["saved"] is True


def test_model_output_is_rendered_as_text_never_markup(app, store):
    store.add_task("Reply with " + XSS, [{"text": XSS}, {"text": "fine"}])
    client, _ = browser_login(app, "ann", "pw-ann")
    page = client.get("/rank")
    assert "<script>window.pwned" not in page.text and "<img src=x" not in page.text
    assert page.text.count("&lt;script&gt;window.pwned=1&lt;/script&gt;") == 2  # prompt and completion
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    # The only scripts on the page are our own static file.
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/rank.js" defer>']
    js = local_client(app).get("/static/rank.js").text
    assert "innerHTML" not in js.replace("never innerHTML", "") and "insertAdjacentHTML" not in js


def test_rank_page_serves_a_random_order_and_the_submit_records_it(app, store):
    (tid,) = add_tasks(store, 1, k=4)
    client, csrf = browser_login(app, "ann", "pw-ann")
    page = client.get("/rank").text
    shown = [int(p) for p in re.findall(r'data-position="(\d+)"', page)]
    assert sorted(shown) == [0, 1, 2, 3]
    assert client.get("/rank").text.count('data-position="') == 4  # reload keeps the same lease
    ranks = [0] * 4
    for place, pos in enumerate(shown):
        ranks[pos] = place + 1
    r = client.post(
        f"/api/tasks/{tid}/submit", json={"ranks": ranks, "idempotency_key": "abc"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.json()["ranks"] == ranks
    (row,) = store.rankings()
    assert row["order_shown"] == shown
    assert "No tasks left" in client.get("/rank").text


def test_json_api_covers_the_whole_flow(app, store):
    tids = add_tasks(store, 3)
    client, auth = api_login(app, "ann", "pw-ann")
    task = client.post("/api/tasks/next", headers=auth).json()["task"]
    assert task["task_id"] in tids and len(task["completions"]) == 3
    body = {"ranks": [1, 3, 2], "idempotency_key": "same-key"}
    first = client.post(f"/api/tasks/{task['task_id']}/submit", json=body, headers=auth).json()
    retry = client.post(f"/api/tasks/{task['task_id']}/submit", json=body, headers=auth).json()
    assert first["saved"] and retry["saved"] and retry["ranking_id"] == first["ranking_id"] and retry["replay"]
    again = client.post(f"/api/tasks/{task['task_id']}/submit", json={**body, "idempotency_key": "new"}, headers=auth)
    assert again.status_code == 409  # nobody ranks the same task twice
    t2 = client.post("/api/tasks/next", headers=auth).json()["task"]["task_id"]
    assert client.post(f"/api/tasks/{t2}/skip", headers=auth).json() == {"ok": True}
    t3 = client.post("/api/tasks/next", headers=auth).json()["task"]["task_id"]
    flag = client.post(f"/api/tasks/{t3}/flag", json={"kind": "all_bad", "comment": "all wrong"}, headers=auth)
    assert flag.status_code == 200
    assert client.post(f"/api/tasks/{t3}/flag", json={"kind": "meh"}, headers=auth).status_code == 422
    assert client.post("/api/tasks/next", headers=auth).json()["task"] is None
    assert client.get("/api/status", headers=auth).json()["progress"] == {"ranked": 1, "skipped": 1, "available": 0}
    bad = client.post(f"/api/tasks/{t3}/submit", json={"ranks": [1, 2], "idempotency_key": "x"}, headers=auth)
    assert bad.status_code in (409, 422)
    assert client.get("/api/admin/stats", headers=auth).status_code == 403
    assert client.post("/api/logout", headers=auth).status_code == 200
    assert client.get("/api/me", headers=auth).status_code == 401


def test_lease_conflicts_over_http(app, store):
    (tid,) = add_tasks(store, 1)
    a, auth_a = api_login(app, "ann", "pw-ann")
    b, auth_b = api_login(app, "bob", "pw-bob")
    assert a.post("/api/tasks/next", headers=auth_a).json()["task"]["task_id"] == tid
    assert b.post("/api/tasks/next", headers=auth_b).json()["task"] is None  # held by ann
    r = b.post(f"/api/tasks/{tid}/submit", json={"ranks": [1, 2, 3], "idempotency_key": "b"}, headers=auth_b)
    assert r.status_code == 409 and r.json()["error"] == "lease_lost"
    assert a.post(f"/api/tasks/{tid}/renew", headers=auth_a).status_code == 200
    assert b.post(f"/api/tasks/{tid}/renew", headers=auth_b).status_code == 409


def test_admin_page_shows_progress_agreement_flags_and_exports(app, store, tmp_path):
    add_tasks(store, 2)
    for name, pw, ranks in (("ann", "pw-ann", [1, 2, 3]), ("bob", "pw-bob", [1, 3, 2])):
        c, auth = api_login(app, name, pw)
        while (t := c.post("/api/tasks/next", headers=auth).json()["task"]) is not None:
            c.post(f"/api/tasks/{t['task_id']}/submit", json={"ranks": ranks, "idempotency_key": f"{name}{t['task_id']}"}, headers=auth)  # fmt: skip
    c, auth = api_login(app, "root", "pw-root")
    t = c.post("/api/tasks/next", headers=auth).json()["task"]
    assert t is None  # both tasks have N = 2 rankings
    store.flag(store.authenticate("root", "pw-root").id, 1, "unsafe", XSS, admin=True)
    stats = c.get("/api/admin/stats", headers=auth).json()
    # ann [1,2,3] vs bob [1,3,2]: pairs agree on (0,1), (0,2), not (1,2) -> 2/3; tau = (2-1)/3.
    assert stats["agreement"]["pairwise_agreement"] == pytest.approx(2 / 3)
    assert stats["agreement"]["kendall_tau"] == pytest.approx(1 / 3)
    assert stats["overview"]["complete"] == 2 and len(stats["flags"]) == 1
    admin, csrf = browser_login(app, "root", "pw-root")
    page = admin.get("/admin").text
    assert 'id="agreement">0.667<' in page and "&lt;script&gt;window.pwned" in page and "<script>window" not in page
    assert browser_login(app, "ann", "pw-ann")[0].get("/admin").status_code == 403
    assert admin.post("/admin/export", data={"csrf_token": "forged"}).status_code == 403


@pytest.mark.slow  # imports `datasets` and writes the export folders
def test_admin_export_button_writes_the_export(app, store, tmp_path):
    add_tasks(store, 2)
    c, auth = api_login(app, "ann", "pw-ann")
    while (t := c.post("/api/tasks/next", headers=auth).json()["task"]) is not None:
        c.post(f"/api/tasks/{t['task_id']}/submit", json={"ranks": [2, 1, 3], "idempotency_key": f"a{t['task_id']}"}, headers=auth)  # fmt: skip
    admin, csrf = browser_login(app, "root", "pw-root")
    done = admin.post("/admin/export", data={"csrf_token": csrf})
    assert done.status_code == 200 and "Exported 2 rankings" in done.text
    assert (tmp_path / "run" / "export" / "kwise" / "dataset_dict.json").exists()


def test_guidelines_render_markdown_from_config(store, tmp_path):
    store.add_user("ann", password="pw-ann")
    md = tmp_path / "guide.md"
    md.write_text("# Our rules\n\n- prefer **short** answers\n")
    app = create_app(RankConfig(store=store.url, guidelines=str(md)), store=store)
    client, _ = browser_login(app, "ann", "pw-ann")
    page = client.get("/guidelines").text
    assert "<h1>Our rules</h1>" in page and "<strong>short</strong>" in page


def test_users_and_status_cli(tmp_path, capsys, monkeypatch):
    from alignment.commands.rank import main
    from alignment.common.errors import UserError
    from reward.rankings.store import open_store

    db = str(tmp_path / "cli.db")
    assert main(["users", "add", "carol", f"store={db}", "role=admin", "password=secret1"]) == 0
    monkeypatch.setenv("RLHF_RANK_PASSWORD", "secret2")
    assert main(["users", "add", "dave", f"store={db}"]) == 0
    assert main(["users", "list", f"store={db}"]) == 0
    out = capsys.readouterr().out
    assert "carol" in out and "admin" in out and "dave" in out
    assert main(["users", "token", "dave", f"store={db}"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    store = open_store(db)
    assert store.user_for_token(token).name == "dave"
    assert main(["users", "set-password", "dave", f"store={db}", "password=secret3"]) == 0
    assert store.authenticate("dave", "secret3") is not None
    assert main(["status", f"store={db}"]) == 0 and "tasks 0" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0 and "annotators_per_task" in capsys.readouterr().out
    with pytest.raises(UserError, match="ranking store not found"):
        main(["status", f"store={tmp_path / 'typo.db'}"])
    assert not (tmp_path / "typo.db").exists()
    with pytest.raises(UserError, match="needs a user NAME"):
        main(["users", "add", f"store={db}"])
    with pytest.raises(UserError, match="did you mean 'serve'"):
        main(["serv"])
    with pytest.raises(UserError, match="annotators_per_task"):
        main(["serve", f"store={db}", "annotators_per_task=0"])
    store.close()


def test_admin_page_manages_people(app, store):
    admin, csrf = browser_login(app, "root", "pw-root")
    page = admin.post(
        "/admin/users", data={"csrf_token": csrf, "name": "carol", "role": "annotator", "password": "pw-carol"}
    )
    assert page.status_code == 200 and "added annotator" in page.text and 'data-user="carol"' in page.text
    carol, _ = api_login(app, "carol", "pw-carol")
    ann_browser, _ = browser_login(app, "ann", "pw-ann")
    # reset ann's password: her session ends, the new password works
    page = admin.post("/admin/users/ann/password", data={"csrf_token": csrf, "password": "fresh-pw"})
    assert "password of &#39;ann&#39; reset" in page.text
    assert ann_browser.get("/rank", follow_redirects=False).status_code == 303
    assert store.authenticate("ann", "fresh-pw") is not None
    # revoke carol's tokens, then deactivate her: no login either
    assert (
        "tokens of &#39;carol&#39; revoked" in admin.post("/admin/users/carol/revoke", data={"csrf_token": csrf}).text
    )
    assert admin.post("/admin/users/carol/deactivate", data={"csrf_token": csrf}).status_code == 200
    assert local_client(app).post("/api/login", json={"username": "carol", "password": "pw-carol"}).status_code == 401
    # an admin cannot lock themselves out; a forged form changes nothing
    assert admin.post("/admin/users/root/deactivate", data={"csrf_token": csrf}).status_code == 400
    assert admin.post("/admin/users/bob/deactivate", data={"csrf_token": "forged"}).status_code == 403
    assert {u["name"]: u["active"] for u in store.list_users()} == {
        "ann": True,
        "bob": True,
        "root": True,
        "carol": False,
    }
    assert carol is not None


@pytest.mark.slow  # imports `datasets` and writes the export folders
def test_admin_export_download_is_a_zip_of_the_export(app, store, tmp_path):
    import io
    import zipfile

    add_tasks(store, 1)
    c, auth = api_login(app, "ann", "pw-ann")
    t = c.post("/api/tasks/next", headers=auth).json()["task"]
    c.post(f"/api/tasks/{t['task_id']}/submit", json={"ranks": [1, 2, 3], "idempotency_key": "z"}, headers=auth)
    admin, csrf = browser_login(app, "root", "pw-root")
    assert admin.get("/admin/export.zip").status_code == 404  # nothing exported yet
    admin.post("/admin/export", data={"csrf_token": csrf})
    r = admin.get("/admin/export.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "export/manifest.json" in names and any(n.startswith("export/kwise/") for n in names)
    assert browser_login(app, "ann", "pw-ann")[0].get("/admin/export.zip").status_code == 403
