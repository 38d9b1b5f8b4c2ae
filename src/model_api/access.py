"""One access log line per request, requests in progress, and errors counted by their code."""

from __future__ import annotations

import logging
import time

from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.logs import request_id_var
from model_api.metrics import Metrics

logger = logging.getLogger("model_api.access")

UNMATCHED = "none"  # the instrumentator's handler label for a path no route matches


class AccessMiddleware:
    """Logs method, route template, status, duration and request id once per request, keeps
    `http_requests_inprogress` by route template, and counts error answers by error code.

    It sits inside RequestIdMiddleware (which sets the id) and outside the error handlers, which
    leave the code of the error they rendered in `request.state.error_code`. Bodies are never read.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        rid = state.get("request_id")
        token = request_id_var.set(rid)
        method = scope["method"]
        route = self._template(scope)
        status = 500
        in_progress = self.metrics.in_progress.labels(route, method)
        in_progress.inc()

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception:
            status = 500
            state.setdefault("error_code", "internal_error")
            raise
        finally:
            in_progress.dec()
            code = state.get("error_code")
            if code is not None:
                self.metrics.count_error(str(code))
            duration_ms = (time.perf_counter() - started) * 1000
            extra = {
                "request_id": rid,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 3),
            }
            if code is not None:
                extra["error_code"] = code
            logger.info("%s %s %d %.1fms", method, route, status, duration_ms, extra=extra)
            request_id_var.reset(token)

    @staticmethod
    def _template(scope: Scope) -> str:
        """The route template ('/predict'), resolved as the instrumentator resolves its `handler`
        label so the two agree; never the raw path."""
        name = get_route_name(HTTPConnection(scope), should_include_root_path=False)
        return str(name) if name else UNMATCHED
