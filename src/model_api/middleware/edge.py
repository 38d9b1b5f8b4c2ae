"""The edge: the one layer every HTTP request passes first, doing what every answer needs.

In order: the request id (`request_id.py`); the early refusal of admission control
(`admission.py`); the metrics and the access line (`access.py`); the security headers on the
answer (`security_headers.py`); and an exception no route expected, answered as a 500 in the
service's shape by the one error renderer, with the request id and the headers like any answer
(Starlette would answer it outside every layer of ours, with neither).

With CORS on, there is no early refusal: a refusal answered here or in the protocol would carry
no Access-Control-Allow-Origin (CORS sits inside this layer), and a browser would see a network
error instead of a 503 it can read and back off from. The route's `DataPlane.admit` then refuses,
inside CORS and still before the body is read, at the cost of routing (about 70 us a refusal
instead of 25).

Otherwise it hands the server its early refusal (`admission.EarlyRefusal`): at the lifespan's start it
puts one in the lifespan state (ASGI's state extension, the dict uvicorn gives its protocols as
`app_state`), where model-api's HTTP protocol finds it (`http_protocol.py`); another server never
looks, and the refusal below answers all the same.

One layer rather than five: each ASGI layer costs a call and a wrapper around every message sent,
and the five cost about 25 us a request (measured in process, demo model on the fast path), a
tenth of a single-row prediction's whole cost on the server.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.api.errors import error_response, unexpected_error
from model_api.dataplane import DataPlane
from model_api.http_protocol import EARLY_REFUSAL
from model_api.logs import request_id_var
from model_api.middleware.access import AccessLog
from model_api.middleware.admission import EarlyRefusal, refusal
from model_api.middleware.request_id import request_id
from model_api.middleware.security_headers import is_cacheable, with_security_headers


class EdgeMiddleware:
    """Request id, admission's early refusal, metrics and access log, security headers, and the
    500 for an unexpected exception, for every HTTP request; the protocol's refusal, handed over
    at the lifespan's start, counts in the same metrics (one `AccessLog`)."""

    def __init__(self, app: ASGIApp, plane: DataPlane, *, refuse_early: bool = True) -> None:
        """Without `refuse_early` (CORS on), neither this layer nor the protocol refuses: the
        route's `DataPlane.admit` does, inside CORS, before the body is read."""
        self.app = app
        self.plane = plane
        self.access = AccessLog(plane.metrics)
        self.refuse_early = refuse_early

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and "state" in scope and self.refuse_early:
                scope["state"][EARLY_REFUSAL] = EarlyRefusal(self.plane, self.access, scope["app"])
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        state = scope["state"]
        token = request_id_var.set(state["request_id"])
        method = scope["method"]
        route = state["route"] = self.access.route_template(scope)
        in_progress = self.access.in_progress(route, method)
        in_progress.inc()
        cacheable = is_cacheable(scope)
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = with_security_headers(list(message.get("headers", ())), cacheable)
                headers.append((b"x-request-id", rid))
                message["headers"] = headers
            await send(message)

        try:
            refused = refusal(self.plane, scope) if self.refuse_early else None
            if refused is not None:
                await error_response(refused, scope)(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if status:  # half an answer is on the wire: nothing can be said any more
                status = 500
                state.setdefault("error_code", "internal_error")
                raise
            error = unexpected_error()
            error.__cause__ = exc
            await error_response(error, scope)(scope, receive, send_with_headers)
        finally:
            in_progress.dec()
            self.access.record(state, method, status or 500, time.perf_counter() - started)
            request_id_var.reset(token)
