"""The JSON API: everything the pages do, for scripts and the scripted annotator.

Authenticate with `POST /api/login` ({"username", "password"} -> {"token"}) and send
`Authorization: Bearer <token>`. Every write returns only after the database commit. Errors are
{"error", "detail"} with a one-line detail: 401/403 (who), 404 (no such id), 409 (the state refuses:
lease lost, task complete, already ranked or flagged), 413 (body too large), 422 (bad input), 429.

Routes are plain `def`s: each runs in one worker thread, authenticates there (one indexed query) and
does its work in one transaction; responses are built directly, without FastAPI's generic encoder.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from reward.rankings.app.render import view_json
from reward.rankings.app.security import SESSION_COOKIE, authed, bearer, client_address
from reward.rankings.store import UserInfo, check_id

router = APIRouter(prefix="/api")


class LoginBody(BaseModel):
    username: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class SubmitBody(BaseModel):
    ranks: list[int] = Field(description="rank of each completion by position, 1 = best, ties share", max_length=64)
    idempotency_key: str = Field(min_length=1, max_length=128)
    next: bool = Field(False, description="also lease and return the next task (one round trip per ranking)")


class FlagBody(BaseModel):
    kind: str = Field(max_length=32)
    comment: str = Field("", max_length=2000)


def ok(data: dict) -> JSONResponse:
    return JSONResponse(data)


def _state(request: Request):
    return request.app.state


def attempt_login(request: Request, username: str, password: str) -> tuple[UserInfo | None, int]:
    """(the user, 0) for the right password; (None, 0) for a wrong one or an unknown name (the same work);
    (None, seconds to wait) when the throttle refuses, and then no password is checked at all.

    The check is reserved with the throttle before it runs (counted as a failure until it succeeds), so a
    burst of concurrent guesses gets at most the configured number of checks, on every worker together.
    """
    state, client = _state(request), client_address(request)
    wait = math.ceil(state.login_limiter.reserve(client, username))
    if wait > 0:
        return None, wait
    user = state.store.authenticate(username, password)
    if user is not None:
        state.login_limiter.succeeded(client, username)
    return user, 0


@router.post("/login")
def login(body: LoginBody, request: Request):
    user, wait = attempt_login(request, body.username, body.password)
    if wait > 0:
        raise HTTPException(
            status_code=429, detail=f"too many failed logins; try again in {wait} s", headers={"Retry-After": str(wait)}
        )
    if user is None:
        raise HTTPException(status_code=401, detail="wrong user name or password")
    cfg = _state(request).cfg
    token, _ = _state(request).store.create_token(user.name, kind="api", ttl_seconds=cfg.session_hours * 3600)
    return ok({"token": token, "user": user.name, "role": user.role})


@router.post("/logout")
def logout(request: Request):
    """Revoke the credential this request came with (bearer token, or session cookie with its CSRF token)."""
    authed(request, write=True)
    token = bearer(request) or request.cookies.get(SESSION_COOKIE)
    _state(request).store.revoke_token(token)
    response = ok({"ok": True})
    if not bearer(request):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me")
def me(request: Request):
    user = authed(request)
    state = _state(request)
    return ok({"user": user.name, "role": user.role, "progress": state.store.progress(user.id, state.n)})


def lease_reply(request: Request, user, leased: tuple | None = None) -> dict:
    """The next task for `user` (leased now, or the (view, progress) already leased with a submit)."""
    state = _state(request)
    cfg = state.cfg
    if leased is None:
        leased = state.store.lease_next(user.id, state.n, cfg.lease_seconds, rng=state.rng, progress=True)
    view, progress = leased
    return {
        "task": view_json(view, cfg.markdown) if view else None,
        "progress": progress,
        "allow_ties": cfg.allow_ties,
        "undo_seconds": cfg.undo_seconds,
        "lease_seconds": cfg.lease_seconds,
    }


@router.post("/tasks/next")
def next_task(request: Request):
    """Lease the next task (or renew the one you hold); {"task": null} when nothing is left for you."""
    return ok(lease_reply(request, authed(request, write=True)))


@router.post("/tasks/{task_id}/submit")
def submit(task_id: int, body: SubmitBody, request: Request):
    """Save a ranking (after an undo: replace it). With "next": true the reply also holds the next task."""
    user = authed(request, write=True)
    state = _state(request)
    then = (state.cfg.lease_seconds, state.rng) if body.next else None
    result = state.store.submit(
        user.id, task_id, body.ranks, body.idempotency_key, state.n, allow_ties=state.cfg.allow_ties, then_lease=then
    )
    leased = result.pop("next", None)
    reply = {"saved": True, **result}
    if body.next:
        # A replayed submit leased nothing with it: lease now.
        reply["next"] = lease_reply(request, user, leased)
    return ok(reply)


@router.post("/tasks/{task_id}/renew")
def renew(task_id: int, request: Request):
    """Keep holding a task while its annotator is still working on it (409 if it has been reassigned)."""
    user = authed(request, write=True)
    state = _state(request)
    until = state.store.renew(user.id, task_id, state.cfg.lease_seconds)
    if until is None:
        return JSONResponse(
            {"error": "lease_lost", "detail": "this task was reassigned after its lease expired; reload"},
            status_code=409,
        )
    return ok({"ok": True, "lease_seconds": state.cfg.lease_seconds, "expires_at": until})


@router.post("/tasks/{task_id}/release")
def release(task_id: int, request: Request):
    """Give the task back without skipping it (409 if you do not hold it)."""
    user = authed(request, write=True)
    if not _state(request).store.release(user.id, task_id):
        return JSONResponse({"error": "not_held", "detail": "you do not hold this task"}, status_code=409)
    return ok({"ok": True})


@router.post("/tasks/{task_id}/skip")
def skip(task_id: int, request: Request):
    user = authed(request, write=True)
    _state(request).store.skip(user.id, task_id)
    return ok({"ok": True})


@router.post("/tasks/{task_id}/flag")
def flag(task_id: int, body: FlagBody, request: Request):
    """Flag the task you hold (admins: any task); once per person and task."""
    user = authed(request, write=True)
    flag_id = _state(request).store.flag(user.id, task_id, body.kind, body.comment, admin=user.role == "admin")
    return ok({"ok": True, "flag_id": flag_id})


@router.post("/rankings/{ranking_id}/undo")
def undo(ranking_id: int, request: Request):
    """Reopen your own ranking within `undo_seconds` of saving it; submit the task again to replace it."""
    user = authed(request, write=True)
    state = _state(request)
    cfg = state.cfg
    if cfg.undo_seconds <= 0:
        raise HTTPException(status_code=409, detail="undo is turned off in this project")
    check_id("ranking", ranking_id)
    view = state.store.undo(user.id, ranking_id, cfg.undo_seconds, cfg.lease_seconds)
    return ok({"task": view_json(view, cfg.markdown), "allow_ties": cfg.allow_ties})


@router.get("/status")
def status(request: Request):
    user = authed(request)
    state = _state(request)
    out = {"user": user.name, "progress": state.store.progress(user.id, state.n)}
    if user.role == "admin":
        out["overview"] = state.store.overview(state.n)
    return ok(out)
