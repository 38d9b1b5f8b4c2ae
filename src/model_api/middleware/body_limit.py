"""The body limit for every route, enforced while the body is read, and no compressed bodies.

A declared Content-Length over the limit is refused before any byte is read; a body without one
(chunked) is counted as it arrives and refused with the first chunk that crosses the limit, so a
client can never make the service buffer more than the limit. Compressed request bodies are
refused (415; 400 on the KServe protocol paths): nothing inflates them, so there is no bomb to defuse.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.api.errors import error_response
from model_api.errors import BadRequest, PayloadTooLarge, ServingError, UnsupportedMediaType

_IDENTITY = (b"", b"identity")


class BodyLimitMiddleware:
    """Refuses (413) request bodies over `limit` bytes, and (415) any Content-Encoding."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is larger than the {self.limit}-byte limit")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused: ServingError | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    refused = BadRequest("the Content-Length header is not a number")
                elif int(value) > self.limit:
                    refused = self._too_large()
            elif name == b"content-encoding" and value.strip().lower() not in _IDENTITY:
                refused = UnsupportedMediaType("compressed request bodies are not accepted; send plain JSON")
        if refused is not None:
            await error_response(refused, scope)(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route that reads the body: its error handler answers 413.
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)
