"""Security headers on every response: nosniff, frame denial, no referrer, a CSP, no caching of answers.

The edge layer (`edge.py`) adds them to every answer, its own refusals and 500s included.

Every answer is an API answer except the Swagger UI page and its assets: API answers get a CSP
that allows nothing and `Cache-Control: no-store`; the /docs page gets a CSP that allows its own
assets and exactly its own inline script (by hash), so it still renders offline.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import Scope

from model_api.api.errors import route_path

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


def is_cacheable(scope: Scope) -> bool:
    """Whether the answer may be cached: the docs' static assets only."""
    return route_path(scope).startswith(_CACHEABLE_PREFIX)


def with_security_headers(headers: list[tuple[bytes, bytes]], cacheable: bool) -> list[tuple[bytes, bytes]]:
    """`headers` plus nosniff, frame denial, no-referrer, same-origin resources and the API's CSP,
    and no-store unless `cacheable`; a header the answer set itself (the docs page's CSP) is kept."""
    present = {name.lower() for name, _ in headers}
    headers = headers + [h for h in _HEADERS if h[0] not in present]
    if b"content-security-policy" not in present:
        headers.append((b"content-security-policy", API_CSP))
    if not cacheable and b"cache-control" not in present:
        headers.append((b"cache-control", b"no-store"))
    return headers
