"""Who is asking, and may they write: sessions, bearer tokens, CSRF, security headers.

Browser requests carry an HttpOnly SameSite=Strict session cookie; every state-changing request
made with that cookie must also carry the session's CSRF token (form field or X-CSRF-Token header),
compared in constant time. Scripts send `Authorization: Bearer <token>` instead; a bearer token is
never sent automatically by a browser, so those requests need no CSRF token.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from reward.rankings.store import UserInfo

SESSION_COOKIE = "rlhf_session"
LOGIN_CSRF_COOKIE = "rlhf_login_csrf"

# No inline script or style anywhere: even if some text escaped its escaping, the browser would not run it.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_user(request: Request) -> UserInfo | None:
    """The user behind the bearer token or the session cookie (bearer wins), or None."""
    store = request.app.state.store
    token = bearer(request)
    if token:
        user = store.user_for_token(token)
        return user if user and user.kind == "api" else None
    user = store.user_for_token(request.cookies.get(SESSION_COOKIE))
    return user if user and user.kind == "session" else None


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


async def check_csrf(request: Request, user: UserInfo) -> None:
    """Refuse a cookie-authenticated write without the session's CSRF token (403)."""
    if user.kind == "api":
        return
    given = request.headers.get("x-csrf-token")
    if not given and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        given = (await request.form()).get("csrf_token")
    if not csrf_matches(user.csrf, given):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")


def authed(request: Request, write: bool = False, admin: bool = False) -> UserInfo:
    """The caller of a JSON route: 401 without a live credential; for writes with a session cookie, 403
    without the session's CSRF token (X-CSRF-Token header); 403 for a non-admin on an admin route.

    Plain (not a FastAPI dependency) so a sync route authenticates in the same worker thread it runs in.
    """
    user = current_user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="log in first (POST /api/login) and send the bearer token")
    if write and user.kind != "api" and not csrf_matches(user.csrf, request.headers.get("x-csrf-token")):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    if admin:
        require_admin(user)
    return user


def require_admin(user: UserInfo) -> None:
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="admins only")


def client_address(request) -> str:
    """The peer address failed logins are counted under. X-Forwarded-For counts only when the peer is one of
    the configured `forwarded_allow_ips` (the app's proxy middleware then rewrites the peer); otherwise the
    header is ignored, so a client cannot pick its own address."""
    return request.client.host if request.client else "unknown"
