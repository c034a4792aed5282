"""The FastAPI application: shared state, the middleware every request passes, error mapping.

Routes live in api.py (JSON) and pages.py (HTML). Every response, errors and crashes included,
leaves through `SecurityHeaders`; refused requests (unknown host, oversized body, bad input, unknown
ids) get a 4xx with a one-line `detail`, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.trustedhost import TrustedHostMiddleware

from alignment.common.errors import UserError
from alignment.config.loader import from_dict
from reward.rankings.app import admin, api, pages, quality
from reward.rankings.app.middleware import BodyLimit, SecurityHeaders
from reward.rankings.app.ratelimit import LoginLimiter
from reward.rankings.app.render import marked
from reward.rankings.config import RankConfig
from reward.rankings.store import Conflict, InvalidRanking, NotFound, Store, StoreFull, open_store, redact

HERE = os.path.dirname(__file__)
CONFIG_ENV = "RLHF_RANK_CONFIG"
log = logging.getLogger("rlhf.rank")


class LockedRandom(random.Random):
    """random.Random shared by request threads: shuffles from a seeded stream must not interleave."""

    def __init__(self, seed=None):
        super().__init__(seed)
        self._lock = threading.Lock()

    def shuffle(self, x):  # noqa: D102
        with self._lock:
            super().shuffle(x)


def create_app(cfg: RankConfig, store: Store | None = None) -> FastAPI:
    """The app for `cfg`; opens (and migrates) the store unless one is given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if store is None:  # only close what this app opened
            app.state.store.close()

    docs = {"docs_url": "/api/docs", "openapi_url": "/api/openapi.json"} if cfg.docs else {}
    app = FastAPI(
        title="rlhf ranking",
        lifespan=lifespan,
        redoc_url=None,
        **({"docs_url": None, "openapi_url": None} | docs),
    )
    app.state.cfg = cfg
    # As many connections as request threads (anyio's 40): an overflow connection is closed when returned, so a
    # smaller pool would connect and disconnect all the time under load.
    app.state.store = store or open_store(cfg.store_url(), pool_size=40, create=False)
    # N lives in the store: a configured value is saved there, otherwise the stored one is used.
    if cfg.annotators_per_task is not None:
        app.state.store.set_annotators_per_task(cfg.annotators_per_task)
    app.state.n = app.state.store.annotators_per_task()
    # The gold settings live in the store too; the store's lease and submit paths read them from there.
    if (cfg.gold_rate, cfg.gold_pause_below, cfg.gold_min_answers) != (None, None, None):
        app.state.store.set_gold_policy(cfg.gold_rate, cfg.gold_pause_below, cfg.gold_min_answers)
    app.state.rng = LockedRandom(cfg.seed)
    app.state.login_limiter = LoginLimiter(cfg.login_max_failures, cfg.login_window_seconds, store=app.state.store)
    templates = Jinja2Templates(directory=os.path.join(HERE, "templates"))
    # Jinja2Templates autoescapes .html; assert it, because every model output goes through these templates.
    assert templates.env.autoescape is True or callable(templates.env.autoescape)
    templates.env.filters["marked"] = marked
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")

    # Innermost first: the proxy rewrite (only for configured proxies), the host check, the body limit, and
    # outermost the security headers, which also turn any crash into a plain 500.
    if cfg.forwarded_allow_ips:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(cfg.forwarded_allow_ips))
    hosts = cfg.hosts_served()  # by default the hosts the server is bound to: no DNS rebinding to a loopback server
    if hosts != ["*"]:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_kb * 1024)
    app.add_middleware(SecurityHeaders)
    _error_handlers(app)
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(quality.router)
    app.include_router(pages.router)
    return app


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line, without echoing the input back."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return _one_line("; ".join(parts) or "invalid request")


def _error_handlers(app: FastAPI) -> None:
    def error(status: int, code: str, detail: str) -> JSONResponse:
        return JSONResponse({"error": code, "detail": _one_line(redact(detail))}, status_code=status)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict):
        return error(409, exc.code, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return error(404, "not_found", str(exc))

    @app.exception_handler(InvalidRanking)
    async def _invalid(request: Request, exc: InvalidRanking):
        return error(422, "invalid", str(exc))

    @app.exception_handler(StoreFull)
    async def _store_full(request: Request, exc: StoreFull):
        # 507 Insufficient Storage: nothing was saved, and the client may retry with the same key later. The
        # operator's log line names the store; the client's says what happened, not where the files are.
        log.error("%s", exc)
        return error(507, "store_full", "the server's disk is full: nothing was saved; retry once space is freed")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error(422, "invalid", validation_detail(exc))

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        return error(400, "bad_request", str(exc))


def app_from_env() -> FastAPI:
    """Factory uvicorn calls in each worker process; the config travels as JSON in an environment variable."""
    return create_app(from_dict(RankConfig, json.loads(os.environ[CONFIG_ENV]), source=CONFIG_ENV))
