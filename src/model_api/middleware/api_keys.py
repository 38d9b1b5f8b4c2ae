"""API keys: off by default; when configured, every route but the probes, /metrics and the docs needs one.

Protection is by path and deny-by-default: routes added later (protocols, admin) are covered
without being listed here. A key is sent as `Authorization: Bearer KEY` or `X-API-Key: KEY` and
compared in constant time against every configured key. Keys are never logged, never put in
metrics, and kept in memory only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from model_api.api.errors import error_response, route_path
from model_api.errors import Unauthorized
from model_api.settings import Settings

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/v2", "/v2/"}
)
"""Probes, scrapers and the docs: open whatever the keys."""

_OPEN_PATTERN = re.compile(
    r"^/docs-assets/"  # Swagger UI's own files
    r"|^/v2/health/(live|ready)$"  # Open Inference Protocol probes
    r"|^/v2/models/[^/]+(/versions/[^/]+)?/ready$"
    r"|^/v1/models/[^/:]+$"  # KServe V1 model readiness (its :predict has a colon)
)


class ApiKeysError(ValueError):
    """The configured API keys cannot be read (a missing or unreadable keys file)."""


def load_api_keys(settings: Settings) -> list[str]:
    """The configured keys: MODEL_API_API_KEYS (comma-separated) and MODEL_API_API_KEYS_FILE (one a line)."""
    keys: list[str] = []
    if settings.api_keys is not None:
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    if settings.api_keys_file is not None:
        try:
            text = Path(settings.api_keys_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            # The path is ours (a setting), not a client's: naming it helps the operator. The error
            # names the file and why, never its content.
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            path = settings.api_keys_file
            raise ApiKeysError(f"cannot read MODEL_API_API_KEYS_FILE {path}: {why}") from None
        for line in text.splitlines():
            keys += [k.strip() for k in line.split("#", 1)[0].split(",")]
    keys = [k for k in keys if k]
    if (settings.api_keys is not None or settings.api_keys_file is not None) and not keys:
        # Set but empty would silently serve without authentication: refuse to start instead.
        raise ApiKeysError("MODEL_API_API_KEYS / MODEL_API_API_KEYS_FILE are set but hold no key")
    return keys


def is_open(path: str) -> bool:
    """Whether `path` (relative to the root path) is served without a key."""
    return path in OPEN_PATHS or _OPEN_PATTERN.match(path) is not None


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class ApiKeyMiddleware:
    """Answers 401 in the one error shape unless the request carries a configured key."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        # Digests have one length, so compare_digest's timing says nothing about a key's length.
        self._digests = [_digest(k.encode()) for k in keys]

    def _accepts(self, presented: list[bytes]) -> bool:
        ok = False
        for candidate in presented:
            digest = _digest(candidate)
            for key in self._digests:  # no early exit: the time does not depend on which key matched
                ok |= hmac.compare_digest(digest, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if is_open(route_path(scope)):
            await self.app(scope, receive, send)
            return
        presented: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    presented.append(token.strip())
            elif name == b"x-api-key" and value.strip():
                presented.append(value.strip())
        if self._accepts(presented):
            await self.app(scope, receive, send)
            return
        if presented:
            error = Unauthorized("the API key is not valid")
            challenge = b'Bearer realm="model-api", error="invalid_token"'
        else:
            error = Unauthorized("send an API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
            challenge = b'Bearer realm="model-api"'
        response = error_response(error, scope)
        response.raw_headers.append((b"www-authenticate", challenge))
        await response(scope, receive, send)
