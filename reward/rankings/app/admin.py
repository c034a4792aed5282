"""Admin: progress, agreement, flags to review, user management, export and its download; as a page and as JSON.

Every route here answers 401 (or the login page) without a live credential and 403 for a non-admin;
every change is CSRF-checked for browser sessions and written to the audit log with the admin's id.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from alignment.common.errors import UserError
from reward.rankings.agreement import agreement_summary
from reward.rankings.app.security import authed, check_csrf, current_user
from reward.rankings.export import export
from reward.rankings.store import redact

router = APIRouter()
USER_ACTIONS = ("deactivate", "activate", "revoke", "password", "role")


class NewUser(BaseModel):
    name: str = Field(max_length=64)
    role: str = Field("annotator", max_length=16)
    password: str = Field(min_length=4, max_length=1024)


class UserChange(BaseModel):
    password: str | None = Field(None, min_length=4, max_length=1024)
    role: str | None = Field(None, max_length=16)


class FlagReview(BaseModel):
    status: str = Field(max_length=16)


def admin_stats(store, n: int) -> dict:
    """Everything the admin page shows, as plain data."""
    by_task: dict[int, list] = {}
    rankings = store.rankings()
    for r in rankings:
        by_task.setdefault(r["task_id"], []).append((r["annotator"], r["ranks"]))
    agreement = agreement_summary(by_task)
    for key in ("pairwise_agreement", "kendall_tau", "krippendorff_alpha"):
        if agreement[key] is not None and math.isnan(agreement[key]):
            agreement[key] = None
    from reward.rankings.app.quality import quality_stats

    return {
        "overview": store.overview(n),
        "annotators": store.annotator_rows(),
        "agreement": agreement,
        "flags": store.flags(),
        "users": store.list_users(),
        "quality": quality_stats(store, rankings),  # gold accuracy, reliability, pauses, campaigns (app/quality.py)
    }


def run_export(request: Request, user) -> dict:
    """The rank config's export (its section; store; output_dir/export, where the reward stage reads)."""
    state = request.app.state
    ecfg = state.cfg.export_config()
    if not ecfg.output_dir:
        raise UserError("no output_dir in the rank config: set output_dir (the run folder) to export from here")
    ecfg.validate()
    manifest = export(ecfg, store=state.store)
    state.store.log(user.id, "export", output_dir=ecfg.output_dir, rankings=manifest["rankings_read"])
    return {"output_dir": ecfg.output_dir, **manifest}


def export_zip(request: Request) -> FileResponse:
    """The last export folder as a zip download (404 before the first export)."""
    folder = request.app.state.cfg.export_config().output_dir
    if not folder or not os.path.isfile(os.path.join(folder, "manifest.json")):
        raise HTTPException(status_code=404, detail="nothing exported yet: export first")
    fd, path = tempfile.mkstemp(suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                full = os.path.join(root, name)
                z.write(full, os.path.join("export", os.path.relpath(full, folder)))
    return FileResponse(
        path, media_type="application/zip", filename="export.zip", background=BackgroundTask(os.unlink, path)
    )


def change_user(request: Request, admin, name: str, action: str, password=None, role=None) -> str:
    """Apply one user-management action; returns what happened, as a sentence."""
    store = request.app.state.store
    if action not in USER_ACTIONS:
        raise HTTPException(status_code=404, detail=f"no user action '{action[:32]}'")
    if action in ("deactivate", "role") and name == admin.name:
        raise UserError("you cannot deactivate yourself or change your own role")
    if action == "deactivate":
        return f"'{name}' deactivated ({store.set_active(name, False, by=admin.id)} tokens revoked)"
    if action == "activate":
        store.set_active(name, True, by=admin.id)
        return f"'{name}' can log in again"
    if action == "revoke":
        return f"{store.revoke_tokens(name, by=admin.id)} tokens of '{name}' revoked"
    if action == "password":
        if not password or len(password) < 4:
            raise UserError("a new password needs at least 4 characters")
        return f"password of '{name}' reset ({store.set_password(name, password, by=admin.id)} tokens revoked)"
    store.set_role(name, role or "", by=admin.id)
    return f"'{name}' is now {role}"


# ----------------------------------------------------------------------------------------------
# JSON


@router.get("/api/admin/stats")
def stats(request: Request):
    authed(request, admin=True)
    return JSONResponse(admin_stats(request.app.state.store, request.app.state.n))


@router.post("/api/admin/export")
def export_now(request: Request):
    return JSONResponse(run_export(request, authed(request, write=True, admin=True)))


@router.get("/api/admin/export.zip")
def export_download(request: Request):
    authed(request, admin=True)
    return export_zip(request)


@router.get("/api/admin/users")
def users(request: Request):
    authed(request, admin=True)
    return JSONResponse({"users": request.app.state.store.list_users()})


@router.post("/api/admin/users")
def add_user(body: NewUser, request: Request):
    admin = authed(request, write=True, admin=True)
    user_id = request.app.state.store.add_user(body.name, role=body.role, password=body.password)
    request.app.state.store.log(admin.id, "admin_add_user", name=body.name, role=body.role)
    return JSONResponse({"ok": True, "id": user_id})


@router.post("/api/admin/users/{name}/{action}")
def user_action(name: str, action: str, request: Request, body: UserChange | None = None):
    admin = authed(request, write=True, admin=True)
    body = body or UserChange()
    return JSONResponse({"ok": True, "detail": change_user(request, admin, name, action, body.password, body.role)})


@router.post("/api/admin/flags/{flag_id}")
def review_flag(flag_id: int, body: FlagReview, request: Request):
    admin = authed(request, write=True, admin=True)
    request.app.state.store.review_flag(admin.id, flag_id, body.status)
    return JSONResponse({"ok": True})


# ----------------------------------------------------------------------------------------------
# Pages


def _admin_page_user(request: Request):
    user = current_user(request)
    if user is None or user.kind != "session":
        return None
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="admins only")
    return user


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse("/login?next=/admin", status_code=303)


async def _page(request: Request, user, status_code: int = 200, **ctx) -> HTMLResponse:
    state = request.app.state
    stats = await run_in_threadpool(admin_stats, state.store, state.n)
    context = {"user": user, "cfg": state.cfg, "csrf": user.csrf, "stats": stats, "n": state.n}
    context.update({"export": None, "export_error": None, "notice": None, "error": None, **ctx})
    return state.templates.TemplateResponse(request, "admin.html", context, status_code=status_code)


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin_page(request: Request):
    user = _admin_page_user(request)
    return await _page(request, user) if user else _login_redirect(request)


@router.get("/admin/export.zip", include_in_schema=False)
def admin_download(request: Request):
    user = _admin_page_user(request)
    return export_zip(request) if user else _login_redirect(request)


async def _admin_form(request: Request):
    """(admin, form) for a POSTed admin form: login redirect, 403 or CSRF refusal otherwise."""
    user = current_user(request)
    if user is None or user.kind != "session":
        return None, None
    await check_csrf(request, user)
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="admins only")
    return user, await request.form()


@router.post("/admin/export", response_class=HTMLResponse, include_in_schema=False)
async def admin_export(request: Request):
    user, _ = await _admin_form(request)
    if user is None:
        return _login_redirect(request)
    try:
        result = await run_in_threadpool(run_export, request, user)
    except UserError as e:
        return await _page(request, user, export_error=redact(str(e)))
    return await _page(request, user, export=result)


@router.post("/admin/users", response_class=HTMLResponse, include_in_schema=False)
async def admin_add_user(request: Request):
    user, form = await _admin_form(request)
    if user is None:
        return _login_redirect(request)
    name, role, password = (str(form.get(k, "")) for k in ("name", "role", "password"))
    try:
        if len(password) < 4:
            raise UserError("a password needs at least 4 characters")
        await run_in_threadpool(request.app.state.store.add_user, name, role or "annotator", password)
    except UserError as e:
        return await _page(request, user, status_code=400, error=str(e))
    return await _page(request, user, notice=f"added {role or 'annotator'} '{name}'")


@router.post("/admin/users/{name}/{action}", response_class=HTMLResponse, include_in_schema=False)
async def admin_user_action(name: str, action: str, request: Request):
    user, form = await _admin_form(request)
    if user is None:
        return _login_redirect(request)
    password, role = form.get("password") or None, form.get("role") or None
    try:
        notice = await run_in_threadpool(change_user, request, user, name, action, password, role)
    except UserError as e:
        return await _page(request, user, status_code=400, error=str(e))
    return await _page(request, user, notice=notice)


@router.post("/admin/flags/{flag_id}", response_class=HTMLResponse, include_in_schema=False)
async def admin_review_flag(flag_id: int, request: Request):
    user, form = await _admin_form(request)
    if user is None:
        return _login_redirect(request)
    await run_in_threadpool(request.app.state.store.review_flag, user.id, flag_id, str(form.get("status", "")))
    return await _page(request, user, notice=f"flag {flag_id} {form.get('status')}")
