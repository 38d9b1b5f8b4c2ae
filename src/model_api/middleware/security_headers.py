"""Security headers on every response: nosniff, frame denial, no referrer, a CSP, no caching of answers.

Every answer is an API answer except the Swagger UI page and its assets: API answers get a CSP
that allows nothing and `Cache-Control: no-store`; the /docs page gets a CSP that allows its own
assets and exactly its own inline script (by hash), so it still renders offline.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.api.errors import route_path

API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
API_ANSWER_HEADERS = (*_HEADERS, (b"content-security-policy", API_CSP), (b"cache-control", b"no-store"))
"""Every header this layer adds to an API answer (for a layer that answers before reaching it)."""
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
