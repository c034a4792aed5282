"""The JSON API: everything the pages do, for scripts and the scripted annotator.

Authenticate with `POST /api/login` ({"username", "password"} -> {"token"}) and send
`Authorization: Bearer <token>`. Every write returns only after the database commit.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from alignment.config import load_config
from reward.rankings.agreement import agreement_summary
from reward.rankings.app.security import api_user, api_writer, bearer, client_address, require_admin
from reward.rankings.config import ExportConfig
from reward.rankings.export import export
from reward.rankings.store import UserInfo

router = APIRouter(prefix="/api")


class LoginBody(BaseModel):
    username: str
    password: str


class SubmitBody(BaseModel):
    ranks: list[int] = Field(description="rank of each completion by position, 1 = best, ties share")
    idempotency_key: str = Field(min_length=1, max_length=128)


class FlagBody(BaseModel):
    kind: str
    comment: str = ""


def _cfg(request: Request):
    return request.app.state.cfg


@router.post("/login")
def login(body: LoginBody, request: Request):
    store, cfg, limiter = request.app.state.store, _cfg(request), request.app.state.login_limiter
    client = client_address(request)
    wait = math.ceil(limiter.retry_after(client, body.username))
    if wait > 0:
        raise HTTPException(
            status_code=429, detail=f"too many failed logins; try again in {wait} s", headers={"Retry-After": str(wait)}
        )
    user = store.authenticate(body.username, body.password)
    if user is None:
        limiter.failed(client, body.username)
        raise HTTPException(status_code=401, detail="wrong user name or password")
    limiter.succeeded(client, body.username)
    token, _ = store.create_token(user.name, kind="api", ttl_seconds=cfg.session_hours * 3600)
    return {"token": token, "user": user.name, "role": user.role}


@router.post("/logout")
def logout(request: Request, user: UserInfo = Depends(api_writer)):
    token = bearer(request)
    if token:
        request.app.state.store.revoke_token(token)
    return {"ok": True}


@router.get("/me")
def me(request: Request, user: UserInfo = Depends(api_user)):
    cfg = _cfg(request)
    return {
        "user": user.name,
        "role": user.role,
        "progress": request.app.state.store.progress(user.id, cfg.annotators_per_task),
    }


@router.post("/tasks/next")
def next_task(request: Request, user: UserInfo = Depends(api_writer)):
    """Lease the next task (or renew the one you hold); {"task": null} when nothing is left for you."""
    store, cfg = request.app.state.store, _cfg(request)
    view = store.next_task(user.id, cfg.annotators_per_task, cfg.lease_seconds, rng=request.app.state.rng)
    progress = store.progress(user.id, cfg.annotators_per_task)
    return {"task": view.as_json() if view else None, "progress": progress, "allow_ties": cfg.allow_ties}


@router.post("/tasks/{task_id}/submit")
def submit(task_id: int, body: SubmitBody, request: Request, user: UserInfo = Depends(api_writer)):
    store, cfg = request.app.state.store, _cfg(request)
    result = store.submit(
        user.id, task_id, body.ranks, body.idempotency_key, cfg.annotators_per_task, allow_ties=cfg.allow_ties
    )
    return {"saved": True, **result}


@router.post("/tasks/{task_id}/renew")
def renew(task_id: int, request: Request, user: UserInfo = Depends(api_writer)):
    """Keep holding a task while its annotator is still working on it (409 if it has been reassigned)."""
    cfg = _cfg(request)
    if not request.app.state.store.renew(user.id, task_id, cfg.lease_seconds):
        raise HTTPException(status_code=409, detail="this task was reassigned after its lease expired; reload")
    return {"ok": True, "lease_seconds": cfg.lease_seconds}


@router.post("/tasks/{task_id}/skip")
def skip(task_id: int, request: Request, user: UserInfo = Depends(api_writer)):
    request.app.state.store.skip(user.id, task_id)
    return {"ok": True}


@router.post("/tasks/{task_id}/flag")
def flag(task_id: int, body: FlagBody, request: Request, user: UserInfo = Depends(api_writer)):
    flag_id = request.app.state.store.flag(user.id, task_id, body.kind, body.comment)
    return {"ok": True, "flag_id": flag_id}


@router.get("/status")
def status(request: Request, user: UserInfo = Depends(api_user)):
    store, cfg = request.app.state.store, _cfg(request)
    out = {"user": user.name, "progress": store.progress(user.id, cfg.annotators_per_task)}
    if user.role == "admin":
        out["overview"] = store.overview(cfg.annotators_per_task)
    return out


def admin_stats(store, cfg) -> dict:
    """Everything the admin page shows, as plain data (shared with pages.py)."""

    by_task: dict[int, list] = {}
    for r in store.rankings():
        by_task.setdefault(r["task_id"], []).append((r["annotator"], r["ranks"]))
    agreement = agreement_summary(by_task)
    for key in ("pairwise_agreement", "kendall_tau"):
        if agreement[key] is not None and math.isnan(agreement[key]):
            agreement[key] = None
    return {
        "overview": store.overview(cfg.annotators_per_task),
        "annotators": store.annotator_rows(),
        "agreement": agreement,
        "flags": store.flags(),
    }


@router.get("/admin/stats")
def stats(request: Request, user: UserInfo = Depends(api_user)):
    require_admin(user)
    return admin_stats(request.app.state.store, _cfg(request))


def run_export(request: Request, user: UserInfo) -> dict:
    import os

    cfg = _cfg(request)
    out_dir = os.path.join(cfg.output_dir or ".", "export")
    ecfg = load_config(ExportConfig, cfg.export_config, [f"store={cfg.store}", f"output_dir={out_dir}"])
    manifest = export(ecfg, store=request.app.state.store)
    request.app.state.store.log(user.id, "export", output_dir=out_dir, rankings=manifest["rankings_read"])
    return {"output_dir": out_dir, **manifest}


@router.post("/admin/export")
def export_now(request: Request, user: UserInfo = Depends(api_writer)):
    require_admin(user)
    return run_export(request, user)
