"""Server-rendered pages: login, ranking, guidelines. Jinja autoescapes every model output.

Admin pages are in admin.py. Every form that changes state carries the session's CSRF token.
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from markupsafe import Markup

from alignment.common.errors import UserError
from reward.rankings.app.api import attempt_login
from reward.rankings.app.render import guidelines_html, view_json
from reward.rankings.app.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    check_csrf,
    csrf_matches,
    current_user,
)
from reward.rankings.store import FLAG_KINDS

router = APIRouter()

DEFAULT_GUIDELINES = """# Ranking guidelines

Put the best response first. Judge, in this order: is it **correct and safe**, does it **follow the
prompt**, is it **clear and concise**?

- Drag the cards, or use the keyboard: the first card has the focus when a task opens; move a card with
  **↑/↓** or **k/j**, press a **number** to send it to that place, **t** to tie it with the card above
  (when ties are allowed), **Tab** to the next card, **Ctrl+Enter** to submit.
- **Undo** right after a submit brings the task back to change your ranking.
- The lease countdown shows how long the task stays yours; it renews while you work, or press **Renew**.
- **Skip** a task you cannot judge. **Flag** it if a response is unsafe, all are bad, or it cannot be ranked.
"""


FAVICON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "favicon.svg")


@router.get("/favicon.ico", include_in_schema=False)
def favicon():
    """The icon at the path browsers and tools ask for by default (the pages also link /static/favicon.svg)."""
    return FileResponse(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


def _render(request: Request, name: str, user, status_code: int = 200, **ctx) -> HTMLResponse:
    cfg = request.app.state.cfg
    return request.app.state.templates.TemplateResponse(
        request, name, {"user": user, "cfg": cfg, "csrf": user.csrf if user else None, **ctx}, status_code=status_code
    )


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _page_user(request: Request):
    user = current_user(request)
    if user is None or user.kind != "session":
        return None
    return user


@router.get("/", include_in_schema=False)
def home(request: Request):
    return RedirectResponse("/rank", status_code=303)


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, next: str = "/rank", error: str = ""):
    token = secrets.token_urlsafe(24)
    response = _render(request, "login.html", None, login_csrf=token, next=_safe_next(next), error=error)
    # Double-submit cookie: a cross-site form cannot read this cookie to copy it into the form.
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.cfg.cookie_secure
    )
    return response


def _safe_next(next_url: str) -> str:
    # Only same-site paths: `//evil.example` or a full URL would turn the login into an open redirect.
    return next_url if next_url.startswith("/") and not next_url.startswith("//") else "/rank"


@router.post("/login", include_in_schema=False)
def login_submit(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form("/rank"),
):
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the login page")
    store, cfg = request.app.state.store, request.app.state.cfg
    user, wait = attempt_login(request, username, password)
    if wait > 0:
        return RedirectResponse("/login?error=throttled&next=" + quote(_safe_next(next)), status_code=303)
    if user is None:
        return RedirectResponse("/login?error=1&next=" + quote(_safe_next(next)), status_code=303)
    token, _ = store.create_token(user.name, kind="session", ttl_seconds=cfg.session_hours * 3600)
    store.log(user.id, "login")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=cfg.cookie_secure,
        max_age=int(cfg.session_hours * 3600),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request):
    """Log out only with the session's CSRF token: a cross-site form can neither end nor clear a session."""
    user = _page_user(request)
    if user is None:
        # No live session came with the request: nothing to end, and no cookie is touched (a cross-site
        # request carries no SameSite=Strict cookie, so clearing "it" would log the real user out).
        return RedirectResponse("/login", status_code=303)
    await check_csrf(request, user)
    request.app.state.store.revoke_token(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/rank", response_class=HTMLResponse, include_in_schema=False)
def rank_page(request: Request):
    user = _page_user(request)
    if user is None:
        return _login_redirect(request)
    state = request.app.state
    cfg = state.cfg
    view, progress = state.store.lease_next(user.id, state.n, cfg.lease_seconds, rng=state.rng, progress=True)
    task = view_json(view, cfg.markdown) if view else None
    if task and cfg.markdown:
        for c in task["completions"]:
            c["html"] = Markup(c["html"])  # sanitised by nh3 in render.py
    return _render(request, "rank.html", user, task=task, progress=progress, flag_kinds=FLAG_KINDS)


@router.post("/tasks/{task_id}/skip", include_in_schema=False)
async def skip_form(task_id: int, request: Request):
    """No-JS fallback for the skip button."""
    user = _page_user(request)
    if user is None:
        return _login_redirect(request)
    await check_csrf(request, user)
    request.app.state.store.skip(user.id, task_id)
    return RedirectResponse("/rank", status_code=303)


@router.post("/tasks/{task_id}/flag", include_in_schema=False)
async def flag_form(task_id: int, request: Request):
    """No-JS fallback for the flag form."""
    user = _page_user(request)
    if user is None:
        return _login_redirect(request)
    await check_csrf(request, user)
    form = await request.form()
    kind, comment = str(form.get("kind", "")), str(form.get("comment", ""))
    request.app.state.store.flag(user.id, task_id, kind, comment, admin=user.role == "admin")
    return RedirectResponse("/rank", status_code=303)


@router.get("/guidelines", response_class=HTMLResponse, include_in_schema=False)
def guidelines(request: Request):
    user = _page_user(request)
    if user is None:
        return _login_redirect(request)
    path = request.app.state.cfg.guidelines
    if path:
        if not os.path.isfile(path):
            raise UserError(f"{path}: guidelines file not found")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = DEFAULT_GUIDELINES
    # Written by the project's admin, and still sanitised: a guidelines file may come from anywhere.
    return _render(request, "guidelines.html", user, guidelines_html=Markup(guidelines_html(text)))
