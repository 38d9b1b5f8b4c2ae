"""The metrics layer: HTTP metrics, requests in progress, errors by code, and one access log line.

It sits outside every guard (API keys, body limit, security headers), so a refusal there (401,
413, 415) is counted in `http_requests_total` and `errors_total` like any other answer. HTTP
request counts and latency are prometheus-fastapi-instrumentator's; this layer resolves the route
template once and hands it to them, so a request is matched against the routes here and in the
router, nowhere else.
"""

from __future__ import annotations

import logging
import time

from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_api.logs import request_id_var
from model_api.metrics import Metrics

logger = logging.getLogger("model_api.access")

UNMATCHED = "none"  # the instrumentator's handler label for a path no route matches


class AccessMiddleware(PrometheusInstrumentatorMiddleware):
    """Counts and times each request by route template, method and status; keeps
    `http_requests_inprogress`; counts error answers by the code the error renderer left in the
    request's scope state; logs method, route template, status, duration and request id once per
    request. Bodies are never read. Sits inside the request-id middleware, which sets the id."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(
            app,
            should_group_status_codes=False,
            excluded_handlers=["/metrics"],
            registry=metrics.registry,
            instrumentations=metrics.http_instrumentations,
        )
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
        name = get_route_name(HTTPConnection(scope), should_include_root_path=False)
        route = state["route"] = str(name) if name else UNMATCHED
        status = 500
        in_progress = self.metrics.in_progress.labels(route, method)
        in_progress.inc()

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await super().__call__(scope, receive, send_and_watch)
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
            # A spike is answered by thousands of refusals a second: counted above, logged at debug
            # only, so the log costs the refusal nothing and does not flood when the pod struggles.
            level = logging.DEBUG if code == "overloaded" else logging.INFO
            if logger.isEnabledFor(level):
                extra = {
                    "request_id": rid,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration_ms, 3),
                }
                if code is not None:
                    extra["error_code"] = code
                logger.log(level, "%s %s %d %.1fms", method, route, status, duration_ms, extra=extra)
            request_id_var.reset(token)

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        """The route template resolved once in `__call__`, as the instrumentator's handler label."""
        route = request.scope["state"]["route"]
        return (route, True) if route != UNMATCHED else (request.url.path, False)
