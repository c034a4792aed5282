"""Admin: gold tasks, annotator quality (gold accuracy, estimated reliability, pauses) and campaign reports.

Every route here is for admins: 401 (or the login page) without a live credential, 403 for anyone else; every
change is CSRF-checked for browser sessions and written to the audit log. Nothing here is reachable by an
annotator: gold answers, policy names and other people's rankings stay on this side.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from alignment.common.errors import UserError
from reward.rankings import reliability
from reward.rankings.app import admin
from reward.rankings.app.security import authed
from reward.rankings.store import NotFound

router = APIRouter()
REPORT_SAMPLES = 500
"""Bootstrap resamples for a campaign report in the app (the command defaults to 1000)."""


class GoldBody(BaseModel):
    prompt: str = Field(min_length=1, max_length=20_000)
    completions: list[str] = Field(min_length=2, max_length=64)
    ranks: list[int] = Field(description="the known answer: rank of each completion, 1 = best, ties share")


def quality_stats(store, rows: list[dict] | None = None) -> dict:
    """Per annotator: gold answers and accuracy, the pause, estimated reliability and loss weight; and campaigns.
    rows: store.rankings() when the caller has them already."""
    rows = store.rankings() if rows is None else rows
    fit = reliability.fit_reliability(
        [{"task": r["task_id"], "annotator": r["annotator"], "ranks": r["ranks"]} for r in rows], store.gold_answers()
    )
    people = reliability.annotator_table(fit, store.gold_report())
    policy = store.gold_policy()
    return {
        "annotators": people,
        "gold_policy": {"rate": policy.rate, "pause_below": policy.pause_below, "min_answers": policy.min_answers},
        "reliability_tasks": fit["tasks"],
        "campaigns": store.campaigns(),
    }


def add_gold(store, admin_id: int, prompt: str, completions: list[str], ranks) -> int:
    (task_id,) = store.add_gold_tasks(
        [{"prompt": prompt, "completions": [{"text": t} for t in completions], "ranks": ranks}], by=admin_id
    )
    return task_id


def campaign_json(store, name: str) -> dict:
    """The campaign's report (NotFound: 404 for a name no campaign has; UserError: 400 before any ranking)."""
    from reward.rankings.campaign import campaign_report, read_eval

    if name not in {c["name"] for c in store.campaigns()}:
        raise NotFound(f"no campaign {name[:64]!r}")
    info, _ = store.campaign_rankings(name)
    eval_dir = info["meta"].get("eval_dir")
    try:
        result = read_eval(eval_dir)[0] if eval_dir else None
    except UserError:
        result = None  # the eval folder moved: the people's figures alone
    return campaign_report(store, name, REPORT_SAMPLES, unit="task", eval_result=result)


# ----------------------------------------------------------------------------------------------
# JSON


@router.get("/api/admin/quality")
def quality(request: Request):
    authed(request, admin=True)
    return JSONResponse(quality_stats(request.app.state.store))


@router.post("/api/admin/gold")
def gold_add(body: GoldBody, request: Request):
    user = authed(request, write=True, admin=True)
    task_id = add_gold(request.app.state.store, user.id, body.prompt, body.completions, body.ranks)
    return JSONResponse({"ok": True, "task_id": task_id})


@router.post("/api/admin/annotators/{name}/resume")
def resume(name: str, request: Request):
    user = authed(request, write=True, admin=True)
    request.app.state.store.resume_annotator(name, by=user.id)
    return JSONResponse({"ok": True})


@router.get("/api/admin/campaigns/{campaign}")
def campaign(campaign: str, request: Request):
    authed(request, admin=True)
    return JSONResponse(campaign_json(request.app.state.store, campaign))


# ----------------------------------------------------------------------------------------------
# Pages


def _parse_gold_form(form) -> tuple[str, list[str], list[int]]:
    """(prompt, completions, ranks) from the form: completions separated by a line holding only `---`."""
    prompt = str(form.get("prompt", "")).strip()
    blocks = [b.strip() for b in "\n".join(str(form.get("completions", "")).splitlines()).split("\n---\n")]
    completions = [b for b in blocks if b]
    try:
        ranks = [int(x) for x in str(form.get("ranks", "")).replace(",", " ").split()]
    except ValueError:
        raise UserError("the known order must be whole numbers, one per completion (e.g. 2 1 3)") from None
    if not prompt or len(completions) < 2:
        raise UserError("a gold task needs a prompt and at least 2 completions (separated by a line with ---)")
    return prompt, completions, ranks


@router.post("/admin/gold", response_class=HTMLResponse, include_in_schema=False)
async def admin_gold(request: Request):
    user, form = await admin._admin_form(request)
    if user is None:
        return admin._login_redirect(request)
    try:
        prompt, completions, ranks = _parse_gold_form(form)
        task_id = await run_in_threadpool(add_gold, request.app.state.store, user.id, prompt, completions, ranks)
    except UserError as e:
        return await admin._page(request, user, status_code=400, error=str(e))
    return await admin._page(request, user, notice=f"gold task {task_id} added")


@router.post("/admin/annotators/{name}/resume", response_class=HTMLResponse, include_in_schema=False)
async def admin_resume(name: str, request: Request):
    user, _ = await admin._admin_form(request)
    if user is None:
        return admin._login_redirect(request)
    try:
        await run_in_threadpool(request.app.state.store.resume_annotator, name, user.id)
    except UserError as e:
        return await admin._page(request, user, status_code=400, error=str(e))
    return await admin._page(request, user, notice=f"'{name}' resumed: only gold answers from now on count")


@router.get("/admin/campaigns/{campaign}", response_class=HTMLResponse, include_in_schema=False)
async def admin_campaign(campaign: str, request: Request):
    user = admin._admin_page_user(request)
    if user is None:
        return RedirectResponse("/login?next=/admin", status_code=303)
    state = request.app.state
    try:
        report = await run_in_threadpool(campaign_json, state.store, campaign)
    except (NotFound, UserError) as e:
        raise HTTPException(status_code=404, detail=str(e)) from None
    context = {"user": user, "cfg": state.cfg, "csrf": user.csrf, "report": report}
    return state.templates.TemplateResponse(request, "campaign.html", context)
