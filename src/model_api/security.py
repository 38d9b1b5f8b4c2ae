"""Security headers on every response, CORS when configured, and the order of the guarding middleware.

Every answer is an API answer except the Swagger UI page and its assets: API answers get a CSP
that allows nothing and `Cache-Control: no-store`; the /docs page gets a CSP that allows its own
assets and exactly its own inline script (by hash), so it still renders offline.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.auth import install_auth
from model_api.limits import BodyLimitMiddleware
from model_api.refusals import route_path
from model_api.settings import Settings

API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
_CACHEABLE_PREFIX = "/docs-assets/"


def docs_csp(html: bytes) -> str:
    """The CSP of a Swagger UI page: its own assets, and its inline scripts by their SHA-256."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )


class SecurityHeadersMiddleware:
    """Adds nosniff, frame denial, no-referrer and a CSP to every response; no-store to API answers.

    A route that sets its own CSP (the docs page) keeps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = route_path(scope).startswith(_CACHEABLE_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in _HEADERS if h[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_CSP))
                if not cacheable and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_guards(app: FastAPI, settings: Settings) -> bool:
    """Add, from the inside out: the body limit, API keys, CORS, security headers; returns whether
    API keys are required.

    Call it just before the request-id middleware is added, so that one stays outermost and every
    refusal here carries a request id. Keys are checked before a body is read; CORS answers a
    browser's preflight before keys are asked for (a preflight never carries them)."""
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    secured = install_auth(app, settings)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    return secured
