"""HTTP metrics, requests in progress, errors by code, and one access log line per request.

Recorded by the edge layer (`edge.py`), outside every guard (API keys, body limit), so a refusal
there (401, 413, 415) and a refusal at admission (503) are counted in `http_requests_total` and
`errors_total` like any other answer. The HTTP metrics keep prometheus-fastapi-instrumentator's
names and labels (`metrics.py`); the route template of a path is resolved by the instrumentator's
own `get_route_name` once per distinct path and remembered, so a request is matched against the
routes here once in a while and in the router every time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection
from starlette.types import Scope

from model_api.errors import Overloaded
from model_api.metrics import Metrics

logger = logging.getLogger("model_api.access")

OVERLOADED = Overloaded.code
UNMATCHED = "none"  # the handler label of a path no route matches (the instrumentator's)
UNCOUNTED = frozenset({"/metrics"})  # scrapes are not requests to the service
ROUTE_CACHE_SIZE = 1024
"""Distinct paths whose route template is remembered; past it the memory starts over (paths with
a model name in them are as many as clients care to invent)."""


class AccessLog:
    """Counts and times each request by route template, method and status; keeps
    `http_requests_inprogress`; counts error answers by the code the error renderer left in the
    request's scope state; logs method, route template, status, duration (ms) and request id once
    per request (at debug level for refusals at admission). Bodies are never read."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._routes: dict[tuple[str, str, str], str] = {}
        self._in_progress: dict[tuple[str, str], Any] = {}
        self._answers: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._refusals: dict[str, tuple[Callable[[], None], Callable[[float], None], Callable[[], None]]] = {}

    def route_template(self, scope: Scope) -> str:
        """The template of the route the path matches (`/v1/models/{name}:predict`), or "none".
        The method is part of the key: `/v1/models/m:predict` is a prediction when POSTed and,
        as a GET, matches `/v1/models/{name}` (the router tries the routes in order)."""
        key = (scope.get("root_path", ""), scope["path"], scope["method"])
        route = self._routes.get(key)
        if route is None:
            name = get_route_name(HTTPConnection(scope), should_include_root_path=False)
            route = str(name) if name else UNMATCHED
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[key] = route
        return route

    def in_progress(self, route: str, method: str) -> Any:
        """The `http_requests_inprogress` child of a route and method (labels are looked up once)."""
        child = self._in_progress.get((route, method))
        if child is None:
            child = self._in_progress[(route, method)] = self.metrics.in_progress.labels(route, method)
        return child

    def record(self, state: dict[str, Any], method: str, status: int, seconds: float) -> None:
        """Count and log one answered request; `state` is the scope's (route, request id, error code)."""
        route = state["route"]
        code = state.get("error_code")
        if route not in UNCOUNTED:
            requests, latency = self._children(route, method, status)
            requests.inc()
            latency.observe(seconds)
        if code is not None:
            self.metrics.count_error(str(code))
        # A spike is answered by thousands of refusals a second: counted above, logged at debug
        # only, so the log costs the refusal nothing and does not flood when the pod struggles.
        level = logging.DEBUG if code == OVERLOADED else logging.INFO
        if logger.isEnabledFor(level):
            self._log(level, state.get("request_id"), method, route, status, seconds, code)

    def refused(self, route: str, request_id: bytes, seconds: float) -> None:
        """Count and log (at debug level) a POST on `route` refused at admission (503
        `overloaded`) by the HTTP protocol, as `record` would, with its metrics looked up once per
        route: under a spike most requests are these, and what each costs is taken from the
        admitted ones."""
        counted = self._refusals.get(route)
        if counted is None:
            requests, latency = self._children(route, "POST", 503)
            errors = self.metrics.error_counter(OVERLOADED)
            counted = self._refusals[route] = (requests.inc, latency.observe, errors.inc)
        count, observe, count_error = counted
        count()
        observe(seconds)
        count_error()
        if logger.isEnabledFor(logging.DEBUG):
            self._log(logging.DEBUG, request_id.decode(), "POST", route, 503, seconds, OVERLOADED)

    def _children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The `http_requests_total` and `http_request_duration_seconds` children of an answer."""
        children = self._answers.get((route, method, status))
        if children is None:
            labels = (route, method, str(status))
            children = self._answers[(route, method, status)] = (
                self.metrics.http_requests.labels(*labels),
                self.metrics.http_latency.labels(*labels),
            )
        return children

    @staticmethod
    def _log(
        level: int, rid: str | None, method: str, route: str, status: int, seconds: float, code: Any
    ) -> None:
        duration_ms = seconds * 1000
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
