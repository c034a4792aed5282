"""One regression test per finding of the security review (issue 13), through the real app and store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

import pytest
from fastapi.testclient import TestClient

from alignment.common.errors import UserError
from reward.rankings.app.server import create_app
from reward.rankings.config import ExportConfig, RankConfig
from reward.rankings.export import build_rows
from reward.rankings.store import Conflict, open_store, redact
from tests.reward.rankings.app.test_app import api_login, browser_login
from tests.reward.rankings.conftest import add_tasks, local_client

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


def one_line_detail(r) -> str:
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    return detail


# ---------------------------------------------------------------------------------------------
# Flags: only the lease holder (or an admin), once per person and task; one account cannot empty the export


def test_flags_only_by_the_lease_holder_once_and_admins_anywhere(app, store):
    t1, t2 = add_tasks(store, 2)
    ann, auth_a = api_login(app, "ann", "pw-ann")
    bob, auth_b = api_login(app, "bob", "pw-bob")
    held = ann.post("/api/tasks/next", headers=auth_a).json()["task"]["task_id"]
    other = t2 if held == t1 else t1
    # bob does not hold `held`, and nobody holds `other`: both refused, nothing recorded
    for tid in (held, other):
        r = bob.post(f"/api/tasks/{tid}/flag", json={"kind": "unsafe"}, headers=auth_b)
        assert r.status_code == 409 and r.json()["error"] == "not_holder"
    assert store.flags() == []
    assert ann.post(f"/api/tasks/{held}/flag", json={"kind": "unsafe"}, headers=auth_a).status_code == 200
    # the flag gave the task back; flagging it again (even after leasing it again) is refused
    again = ann.post(f"/api/tasks/{held}/flag", json={"kind": "all_bad"}, headers=auth_a)
    assert again.status_code == 409
    # a completed task cannot be flagged by its annotators afterwards (they no longer hold it)
    t = bob.post("/api/tasks/next", headers=auth_b).json()["task"]["task_id"]
    bob.post(f"/api/tasks/{t}/submit", json={"ranks": [1, 2, 3], "idempotency_key": "b1"}, headers=auth_b)
    assert bob.post(f"/api/tasks/{t}/flag", json={"kind": "unsafe"}, headers=auth_b).status_code == 409
    root, auth_r = api_login(app, "root", "pw-root")
    assert root.post(f"/api/tasks/{t}/flag", json={"kind": "unsafe"}, headers=auth_r).status_code == 200
    assert sorted(f["status"] for f in store.flags()) == ["confirmed", "open"]


def test_one_account_cannot_empty_the_export_by_flagging(store):
    """The class: the export's drop-flagged default must never rest on one annotator's word."""
    n_tasks = 6
    add_tasks(store, n_tasks, k=3)
    ranker, spammer, second = (store.add_user(n, password="pw12") for n in ("ranker", "spammer", "second"))
    for _ in range(n_tasks):
        v = store.next_task(ranker, 3, 60)
        store.submit(ranker, v.task_id, [1, 2, 3], f"r{v.task_id}", 3)
    # the spammer flags every task they can get, as fast as they can
    flagged = 0
    while (v := store.next_task(spammer, 3, 60)) is not None:
        store.flag(spammer, v.task_id, "unsafe")
        with pytest.raises(Conflict):
            store.flag(spammer, v.task_id, "unsafe")
        flagged += 1
    assert flagged == n_tasks
    kwise, _, counts = build_rows(store.rankings(), ExportConfig(store="x", output_dir="y"))
    assert len(kwise) == n_tasks and "tasks_flagged" not in counts
    # a second person flagging the same task reaches the quorum; an admin dismissing a flag undoes that
    v = store.next_task(second, 3, 60)
    store.flag(second, v.task_id, "unsafe")
    kwise, _, counts = build_rows(store.rankings(), ExportConfig(store="x", output_dir="y"))
    assert len(kwise) == n_tasks - 1 and counts["tasks_flagged"] == 1
    admin = store.add_user("lead", role="admin", password="pw12")
    flag_id = next(f["id"] for f in store.flags() if f["user"] == "second")
    store.review_flag(admin, flag_id, "dismissed")
    assert len(build_rows(store.rankings(), ExportConfig(store="x", output_dir="y"))[0]) == n_tasks


# ---------------------------------------------------------------------------------------------
# Passwords in store URLs


def test_database_urls_are_redacted_in_messages_and_saved_configs(tmp_path):
    from reward.rankings.config import redacted

    url = "postgresql://bob:s3cr3t@127.0.0.1:1/rankings"
    assert "s3cr3t" not in redact(f"could not open {url}") and "bob:***@" in redact(url)
    cfg = RankConfig(store=url, output_dir=str(tmp_path))
    assert "s3cr3t" not in json.dumps(redacted(cfg).__dict__, default=str)
    assert cfg.store == url  # the original is untouched
    # an unreachable server: the one-line error names the store without its password
    with pytest.raises(UserError) as err:
        open_store(url)
    assert "s3cr3t" not in str(err.value) and "bob" in str(err.value)
    with pytest.raises(UserError) as err:
        open_store("postgresql://bob:s3cr3t@host:notaport/db")
    assert "s3cr3t" not in str(err.value)


@pytest.mark.postgres
def test_serve_prints_and_saves_no_password_and_admin_export_error_hides_it(pg_url, tmp_path, monkeypatch, capsys):
    import uvicorn

    from alignment.commands.rank import main

    url = pg_url.replace("postgres@", "postgres:s3cr3t@")  # the throwaway cluster trusts any password
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    open_store(url).close()
    assert main(["serve", f"store={url}", f"output_dir={tmp_path}", "port=8765"]) == 0
    out = capsys.readouterr().out
    saved = (tmp_path / "rank" / "config.yaml").read_text()
    assert "s3cr3t" not in out and "s3cr3t" not in saved and "postgres:***@" in saved
    assert calls[0]["proxy_headers"] is False  # uvicorn must not trust X-Forwarded-For on its own
    assert main(["serve", f"store={url}", "port=8765", "forwarded_allow_ips=[10.0.0.7]"]) == 0
    assert calls[1]["proxy_headers"] is True and calls[1]["forwarded_allow_ips"] == "10.0.0.7"
    # the admin page's export error (no rankings yet) names the store without the password
    store = open_store(url)
    store.add_user("root", role="admin", password="pw-root")
    app = create_app(RankConfig(store=url, output_dir=str(tmp_path)), store=store)
    admin, csrf = browser_login(app, "root", "pw-root")
    page = admin.post("/admin/export", data={"csrf_token": csrf}).text
    assert "Export failed" in page and "s3cr3t" not in page
    store.close()


# ---------------------------------------------------------------------------------------------
# Proxies, throttle, timing


def test_x_forwarded_for_is_ignored_unless_the_proxy_is_configured(store):
    store.add_user("ann", password="pw-ann")
    plain = local_client(create_app(RankConfig(store=store.url, login_max_failures=2), store=store))
    for i in range(2):
        headers = {"X-Forwarded-For": f"10.0.0.{i}"}
        assert plain.post("/api/login", json={"username": "ann", "password": "x"}, headers=headers).status_code == 401
    r = plain.post("/api/login", json={"username": "ann", "password": "x"}, headers={"X-Forwarded-For": "10.9.9.9"})
    assert r.status_code == 429  # a made-up address does not buy new guesses
    # behind a configured proxy (TestClient's peer is "testclient"), the forwarded address is the client
    cfg = RankConfig(store=store.url, login_max_failures=2, forwarded_allow_ips=["testclient"])
    proxied = local_client(create_app(cfg, store=store))
    r = proxied.post(
        "/api/login", json={"username": "ann", "password": "pw-ann"}, headers={"X-Forwarded-For": "10.1.1.1"}
    )
    assert r.status_code == 200


def test_login_throttle_is_shared_by_every_server_process(tmp_path):
    """Two apps on one store stand in for two uvicorn workers: the budget is one, not two."""
    db = str(tmp_path / "shared.db")
    first, second = open_store(db), open_store(db)
    first.add_user("ann", password="pw-ann")
    workers = [local_client(create_app(RankConfig(store=db, login_max_failures=3), store=s)) for s in (first, second)]
    for i in range(3):
        assert workers[i % 2].post("/api/login", json={"username": "ann", "password": "x"}).status_code == 401
    for w in workers:
        assert w.post("/api/login", json={"username": "ann", "password": "pw-ann"}).status_code == 429
    first.close()
    second.close()


def test_unknown_and_known_user_names_cost_the_same_scrypt_work(store, monkeypatch):
    store.add_user("ann", password="pw-ann")
    store.add_user("nopw")  # an account without a password
    store.add_user("gone", password="pw-gone")
    store.set_active("gone", False)
    calls = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **kw: calls.append(kw["n"]) or real(*a, **kw))
    store.authenticate("ann", "warm-up")  # the dummy hash is made once, lazily
    for name in ("ann", "nobody", "nopw", "gone"):
        calls.clear()
        assert store.authenticate(name, "wrong") is None
        assert calls == [2**14], name  # exactly one scrypt at the same cost, whoever the name is


# ---------------------------------------------------------------------------------------------
# Tokens and sessions


def test_password_change_revokes_every_token_and_cli_tokens_expire(app, store, tmp_path, capsys):
    from alignment.commands.rank import main

    api, auth = api_login(app, "ann", "pw-ann")
    browser, _ = browser_login(app, "ann", "pw-ann")
    store.set_password("ann", "new-pw")
    assert api.get("/api/me", headers=auth).status_code == 401
    assert browser.get("/rank", follow_redirects=False).status_code == 303
    assert main(["users", "token", "bob", f"store={store.url}"]) == 0
    token = capsys.readouterr().out.strip()
    with store.engine.connect() as c:
        from sqlalchemy import text

        (expires,) = c.execute(text("SELECT expires_at FROM tokens WHERE kind = 'api' ORDER BY id DESC")).first()
    assert expires is not None  # 720 hours by default: no token lives forever
    bearer = {"Authorization": f"Bearer {token}"}
    client = local_client(app)
    assert client.get("/api/me", headers=bearer).status_code == 200
    assert main(["users", "revoke", "bob", f"store={store.url}"]) == 0
    assert client.get("/api/me", headers=bearer).status_code == 401
    bob, auth_b = api_login(app, "bob", "pw-bob")
    assert main(["users", "deactivate", "bob", f"store={store.url}"]) == 0
    assert bob.get("/api/me", headers=auth_b).status_code == 401
    assert client.post("/api/login", json={"username": "bob", "password": "pw-bob"}).status_code == 401
    assert main(["users", "activate", "bob", f"store={store.url}"]) == 0
    assert client.post("/api/login", json={"username": "bob", "password": "pw-bob"}).status_code == 200


def test_logout_needs_csrf_and_api_logout_with_a_cookie_revokes_it(app):
    client, csrf = browser_login(app, "ann", "pw-ann")
    # a cross-site form: no CSRF token -> refused, session intact and cookie kept
    r = client.post("/logout", data={}, follow_redirects=False)
    assert r.status_code == 403 and "rlhf_session" not in r.headers.get("set-cookie", "")
    assert client.get("/rank", follow_redirects=False).status_code == 200
    # a cross-site request carries no SameSite=Strict cookie: nothing is cleared either
    anon = local_client(app)
    r = anon.post("/logout", data={}, follow_redirects=False)
    assert r.status_code == 303 and "set-cookie" not in r.headers
    # the JSON logout with the session cookie (and its CSRF header) really ends the session
    assert client.post("/api/logout").status_code == 403
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    token_cookie = client.cookies.get("rlhf_session")
    assert token_cookie is None or client.get("/rank", follow_redirects=False).status_code == 303
    assert app.state.store.user_for_token(token_cookie) is None if token_cookie else True


# ---------------------------------------------------------------------------------------------
# Request size, bad ids and bodies, headers on every response


def test_an_oversized_body_is_refused_before_it_is_read(app):
    pulled = []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/login", "raw_path": b"/api/login", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(64 * 1024 * 1024).encode())],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {},
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and pulled == []  # not one byte of the 64 MB was read
    assert dict(sent[0]["headers"]).get(b"x-frame-options") == b"DENY"
    # without a Content-Length (chunked), it stops as soon as the limit is passed
    pulled.clear()
    sent.clear()
    scope["headers"] = [h for h in scope["headers"] if h[0] != b"content-length"]
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and len(pulled) <= 1024 // 64 + 1


@pytest.mark.parametrize("bad", ["999999", "0", "-3", str(2**70)])
def test_unknown_or_out_of_range_ids_are_404_with_one_line(app, store, bad):
    add_tasks(store, 1)
    client, auth = api_login(app, "ann", "pw-ann")
    for path, body in (
        (f"/api/tasks/{bad}/submit", {"ranks": [1, 2, 3], "idempotency_key": "k"}),
        (f"/api/tasks/{bad}/renew", {}),
        (f"/api/tasks/{bad}/skip", {}),
        (f"/api/tasks/{bad}/flag", {"kind": "unsafe"}),
        (f"/api/rankings/{bad}/undo", {}),
    ):
        r = client.post(path, json=body, headers=auth)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert bad in one_line_detail(r) or "no " in one_line_detail(r)
        assert all(h in r.headers for h in SECURITY_HEADERS)


def test_bad_json_bodies_are_422_with_one_line(app, store):
    (tid,) = add_tasks(store, 1)
    client, auth = api_login(app, "ann", "pw-ann")
    client.post("/api/tasks/next", headers=auth)
    headers = {**auth, "Content-Type": "application/json"}
    for raw in (
        '{"ranks": [NaN, 1, 2], "idempotency_key": "k"}',
        '{"ranks": [Infinity, 1, 2], "idempotency_key": "k"}',
        '{"ranks": "abc", "idempotency_key": "k"}',
        '{"ranks": [1, 2, 3]}',
        "{not json",
        "[1, 2]",
    ):
        r = client.post(f"/api/tasks/{tid}/submit", content=raw, headers=headers)
        assert r.status_code == 422, (raw, r.status_code, r.text)
        one_line_detail(r)
    r = client.post("/api/tasks/abc/submit", json={"ranks": [1], "idempotency_key": "k"}, headers=auth)
    assert r.status_code == 422 and "task_id" in one_line_detail(r)
    r = client.post(
        "/api/login", content='{"username": NaN, "password": "x"}', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert store.rankings() == []


def test_security_headers_on_every_response_even_a_crash(app, store):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    client = local_client(app, raise_server_exceptions=False)
    responses = [
        client.get("/boom"),
        client.get("/login"),
        client.get("/static/rank.js"),
        client.get("/nowhere"),
        client.post("/api/tasks/next"),
        client.post("/api/login", json={}),
    ]
    assert [r.status_code for r in responses] == [500, 200, 200, 404, 401, 422]
    for r in responses:
        assert all(h in r.headers for h in SECURITY_HEADERS), r.request.url
    assert "secret internals" not in responses[0].text and "Traceback" not in responses[0].text


# ---------------------------------------------------------------------------------------------
# Guidelines, docs, hosts


def test_guidelines_markdown_is_sanitised(store, tmp_path):
    store.add_user("ann", password="pw-ann")
    md = tmp_path / "guide.md"
    md.write_text(
        "# Rules\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "[click](javascript:alert(3)) and **bold**\n\n<iframe src='https://evil.example'></iframe>\n"
    )
    app = create_app(RankConfig(store=store.url, guidelines=str(md)), store=store)
    client, _ = browser_login(app, "ann", "pw-ann")
    article = re.search(r'<article class="guidelines">(.*?)</article>', client.get("/guidelines").text, re.S).group(1)
    assert "<h1>Rules</h1>" in article and "<strong>bold</strong>" in article
    for bad in ("<script", "onerror", "javascript:", "<iframe"):
        assert bad not in article


def test_api_docs_are_off_unless_enabled(store):
    client = local_client(create_app(RankConfig(store=store.url), store=store))
    assert client.get("/api/docs").status_code == 404 and client.get("/api/openapi.json").status_code == 404
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
    on = local_client(create_app(RankConfig(store=store.url, docs=True), store=store))
    assert on.get("/api/docs").status_code == 200 and on.get("/api/openapi.json").status_code == 200


def test_allowed_hosts(store):
    cfg = RankConfig(store=store.url, allowed_hosts=["rank.example.org"])
    client = TestClient(create_app(cfg, store=store), base_url="http://rank.example.org")
    assert client.get("/login").status_code == 200
    r = client.get("/login", headers={"Host": "evil.example"})
    assert r.status_code == 400 and all(h in r.headers for h in SECURITY_HEADERS)


LOOPBACK_NAMES = ["127.0.0.1:8000", "localhost", "localhost:8000", "[::1]:8000"]


@pytest.mark.parametrize(
    "host, served, refused",
    [
        ("127.0.0.1", LOOPBACK_NAMES, ["evil.example", "testserver", "10.0.0.1", "127.0.0.1.evil.example", "[::2]"]),
        ("::1", ["[::1]", "127.0.0.1"], ["evil.example"]),
        ("rank.example.org", ["rank.example.org:443", "RANK.example.org"], ["localhost", "127.0.0.1", "evil.x"]),
    ],
)
def test_by_default_only_the_hosts_the_server_is_bound_to_are_served(store, host, served, refused):
    """A loopback server answers no other Host (a DNS-rebinding page cannot reach it through a name it controls)."""
    client = local_client(create_app(RankConfig(store=store.url, host=host), store=store))
    for name in served:
        assert client.get("/login", headers={"Host": name}).status_code == 200, name
    for name in refused:
        r = client.get("/login", headers={"Host": name})
        assert r.status_code == 400 and all(h in r.headers for h in SECURITY_HEADERS), name


def test_allowed_hosts_opens_the_server_to_any_host_or_a_list(store):
    anyone = local_client(create_app(RankConfig(store=store.url, allowed_hosts=["*"]), store=store))
    assert anyone.get("/login", headers={"Host": "evil.example"}).status_code == 200
    listed = local_client(create_app(RankConfig(store=store.url, allowed_hosts=["*.example.org"]), store=store))
    assert listed.get("/login", headers={"Host": "rank.example.org"}).status_code == 200
    assert listed.get("/login", headers={"Host": "127.0.0.1"}).status_code == 400  # a list replaces the default


def test_a_wildcard_bind_serves_this_machines_names_and_loopback():
    import socket

    from reward.rankings.config import bound_hosts

    hosts = bound_hosts("0.0.0.0")
    assert {"127.0.0.1", "localhost", "[::1]", socket.gethostname().lower()} <= set(hosts) and "*" not in hosts
    assert bound_hosts("10.1.2.3") == ["10.1.2.3"] and bound_hosts("fe80::1") == ["[fe80::1]"]


@pytest.mark.parametrize("hosts, needle", [([], "must not be empty"), (["evil*.com"], "'evil\\*.com' is not a host")])
def test_allowed_hosts_that_match_nothing_or_badly_are_refused_when_the_config_loads(hosts, needle):
    with pytest.raises(UserError, match=needle):
        RankConfig(store="x.db", allowed_hosts=hosts).validate()


def test_look_alike_user_names_are_refused_on_the_admin_page_and_the_api(app, store):
    admin, csrf = browser_login(app, "root", "pw-root")
    page = admin.post("/admin/users", data={"csrf_token": csrf, "name": "\u0430nn", "password": "pw-x1"})
    assert page.status_code == 400 and "user name &#39;\\u0430nn&#39; is not allowed" in page.text
    api, auth = api_login(app, "root", "pw-root")
    r = api.post("/api/admin/users", json={"name": "ANN", "password": "pw-x1"}, headers=auth)
    assert (
        r.status_code == 400
        and r.json()["detail"] == "user name 'ANN' is taken by 'ann' (names are compared ignoring case)"
    )
    r = api.post("/api/admin/users", json={"name": "r\xf6\xf6t", "password": "pw-x1"}, headers=auth)
    assert r.status_code == 400 and r.json()["detail"].startswith("user name 'r\\xf6\\xf6t' is not allowed")
    assert sorted(u["name"] for u in store.list_users()) == ["ann", "bob", "root"]
