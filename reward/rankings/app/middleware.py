"""Pure ASGI middleware the whole app sits behind: security headers on every response, a body size limit.

Pure ASGI rather than `@app.middleware("http")`: Starlette sends a crash's 500 from its outermost
layer, past any http middleware, so headers set there never reach a 500; and a size limit must see
the body as it streams in, before anything reads it.
"""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException

from reward.rankings.app.security import CSP

log = logging.getLogger("rlhf.rank")

HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the security headers (and `Cache-Control: no-store` unless set) to every HTTP response, and
    answers an unhandled exception with a plain JSON 500 (logged here, never shown to the client)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dict(HEADERS)]
                headers += HEADERS
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = json.dumps({"error": "internal", "detail": "internal server error"}).encode()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised from `receive` mid-body; an HTTPException, so whatever is reading the body answers 413 with it."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"request body over the limit of {limit // 1024} KiB")


class BodyLimit:
    """413 for a request body over `max_bytes`: at once from Content-Length, or as soon as a streamed body
    passes the limit (nothing past the limit is read)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    return await self._refuse(send)
        seen = 0
        responded = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not responded:
                await self._refuse(send)

    async def _refuse(self, send):
        body = json.dumps(
            {"error": "too_large", "detail": f"request body over the limit of {self.max_bytes // 1024} KiB"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
