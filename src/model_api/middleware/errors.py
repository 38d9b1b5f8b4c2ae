"""The innermost layer: an exception no route expected is answered as a 500 in the service's shape.

Starlette hands such exceptions to its outermost ServerErrorMiddleware, outside every layer of
ours, so its 500 would carry no request id, no security headers and no error code for the metrics.
Here, inside them all, it is rendered by the one error renderer instead, and the exception is not
re-raised (the server has nothing left to do with it but log it, which the renderer does).
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
