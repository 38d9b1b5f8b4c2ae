"""An exception no route expected, answered as a 500 inside CORS, so a browser can read it.

The edge (`edge.py`) answers such an exception too, with the request id and the security headers,
but it sits outside CORSMiddleware: with CORS on, its 500 would carry no Access-Control-Allow-Origin
and a browser client could not read the request id it is asked to quote. With CORS on, this layer
sits innermost and renders the 500 by the one error renderer, inside CORS; without CORS the edge's
500 is the same answer, and this layer is not in the stack (every layer costs every request).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.api.errors import error_response, unexpected_error


class UnexpectedErrorMiddleware:
    """Answers 500 (`internal_error`) for any exception raised below it before the answer started."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:  # half an answer is on the wire: nothing can be said any more
                raise
            error = unexpected_error()
            error.__cause__ = exc
            await error_response(error, scope)(scope, receive, send)
