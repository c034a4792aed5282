"""The FastAPI application: shared state, error mapping, security headers. Routes live in api.py and pages.py."""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from alignment.config import UserError, from_dict
from reward.rankings.app import api, pages
from reward.rankings.app.ratelimit import LoginLimiter
from reward.rankings.app.security import CSP
from reward.rankings.config import RankConfig
from reward.rankings.store import Conflict, InvalidRanking, Store, open_store

HERE = os.path.dirname(__file__)
CONFIG_ENV = "RLHF_RANK_CONFIG"


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

    app = FastAPI(
        title="rlhf ranking", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json", lifespan=lifespan
    )
    app.state.cfg = cfg
    app.state.store = store or open_store(cfg.store, pool_size=16)
    app.state.rng = LockedRandom(cfg.seed)
    app.state.login_limiter = LoginLimiter(cfg.login_max_failures, cfg.login_window_seconds)
    templates = Jinja2Templates(directory=os.path.join(HERE, "templates"))
    # Jinja2Templates autoescapes .html; assert it, because every model output goes through these templates.
    assert templates.env.autoescape is True or callable(templates.env.autoescape)
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict):
        return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=409)

    @app.exception_handler(InvalidRanking)
    async def _invalid(request: Request, exc: InvalidRanking):
        return JSONResponse({"error": "invalid", "detail": str(exc)}, status_code=422)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError):
        return JSONResponse({"error": "bad_request", "detail": str(exc)}, status_code=400)

    app.include_router(api.router)
    app.include_router(pages.router)

    return app


def app_from_env() -> FastAPI:
    """Factory uvicorn calls in each worker process; the config travels as JSON in an environment variable."""

    return create_app(from_dict(RankConfig, json.loads(os.environ[CONFIG_ENV]), source=CONFIG_ENV))
