"""The one error renderer: every error answer of the service, in the shape its path's clients parse.

- The service's own routes answer {"error": {"code", "message", "details", "request_id"}}.
- The KServe protocol routes (/v1/, /v2/) answer {"error": "<message>"}, the shape KServe's and
  Triton's clients parse, with the statuses the Open Inference Protocol gives: 400 for a request
  the server cannot use, 404 for a model it does not serve, 503 while loading or draining; 401,
  405, 413, 499 and 5xx keep their meaning.
- MLflow's scoring protocol (/invocations) answers {"error_code": "...", "message": "..."}, the
  keys MLflow's scoring server (and its clients) use, with the same statuses as the KServe
  protocols (MLflow answers 400 for any input it refuses), and the request id besides.
- An Overloaded refusal (503) carries `Retry-After: <seconds>` in every shape.

Every answer records its error code in the request's scope state, where the access layer counts
it in `errors_total` (guards' refusals included). One logging policy: a server-side failure (5xx)
is logged with the request id and the cause's traceback, except 503 (loading, draining, overloaded:
expected, and counted in the metrics) and 504 (logged as a warning, no traceback: the model was
merely slow, or the queue long).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from model_api.errors import (
    BadRequest,
    ClientDisconnected,
    ErrorDetail,
    InvalidInput,
    MethodNotAllowed,
    ModelNotReady,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PredictionFailed,
    RequestTimeout,
    ServingError,
    Unauthorized,
    UnsupportedMediaType,
    describe_error,
)
from model_api.responses import JSONResponse

logger = logging.getLogger("model_api.errors")

PROTOCOL_PREFIXES = ("/v1/", "/v2/")
MAX_MESSAGE_DETAILS = 5
"""How many faults (row and field) a protocol error message lists."""

_KEEP_ON_PROTOCOLS = (
    Unauthorized,
    ModelNotReady,
    NotFound,
    PayloadTooLarge,
    MethodNotAllowed,
    ClientDisconnected,
)
_HTTP_ERRORS: dict[int, type[ServingError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def route_path(scope: Scope) -> str:
    """The request's path below the app's root path (what the routes match)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


MLFLOW_PATHS = frozenset(("/invocations",))
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    413: "RESOURCE_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""MLflow's error codes (mlflow.protos.databricks_pb2) by HTTP status."""


def is_protocol_path(scope: Scope) -> bool:
    """Whether the request is on a KServe protocol route (V1 or V2)."""
    return route_path(scope).startswith(PROTOCOL_PREFIXES)


def status_of(error: ServingError) -> int:
    """The protocol status of one of the service's errors."""
    if isinstance(error, _KEEP_ON_PROTOCOLS) or error.status_code >= 500:
        return error.status_code
    return 400


def message_of(error: ServingError) -> str:
    """The error's message with its first details (row and field, never the value) folded in."""
    if not error.details:
        return error.message
    parts = []
    for detail in error.details[:MAX_MESSAGE_DETAILS]:
        where = []
        if detail.row is not None:
            where.append(f"row {detail.row}")
        if detail.field is not None:
            where.append(detail.field)
        parts.append(f"{' '.join(where)}: {detail.message}" if where else detail.message)
    return f"{error.message}: " + "; ".join(parts)


def request_id_of(scope: Scope) -> str | None:
    """The request id the edge layer gave this request."""
    rid = scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def error_body(error: ServingError, request_id: str | None) -> dict[str, Any]:
    """The service's own error shape."""
    details = [d.to_dict() for d in error.details]
    return {
        "error": {"code": error.code, "message": error.message, "details": details, "request_id": request_id}
    }


def _log(error: ServingError, request_id: str | None) -> None:
    if error.status_code < 500 or isinstance(error, (ModelNotReady, Overloaded)):
        return
    if isinstance(error, RequestTimeout):
        logger.warning("%s (request_id=%s)", error.message, request_id)
        return
    cause = error.__cause__ or error
    if not isinstance(error, PredictionFailed):  # our own failure: its traceback is ours to read
        logger.error(
            "%s (request_id=%s)",
            error.message,
            request_id,
            exc_info=(type(cause), cause, cause.__traceback__),
        )
        return
    # A model's exception text often quotes the rows it was given: the log gets its type and a
    # masked first line; the full traceback only at debug level (README: "Debugging a model's errors").
    logger.error("%s (request_id=%s): %s", error.message, request_id, describe_error(cause))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "the full error (request_id=%s)", request_id, exc_info=(type(cause), cause, cause.__traceback__)
        )


def error_response(error: ServingError, scope: Scope, status: int | None = None) -> Response:
    """Render `error` for the request of `scope`: record its code, log it by the one policy, and
    answer in the shape of the request's path. `status` overrides the error's own (an HTTP error
    of the framework keeps its status)."""
    scope.setdefault("state", {})["error_code"] = error.code
    rid = request_id_of(scope)
    _log(error, rid)
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Overloaded) else None
    if is_protocol_path(scope):
        code = status or status_of(error)
        return JSONResponse({"error": message_of(error)}, status_code=code, headers=headers)
    if route_path(scope) in MLFLOW_PATHS:
        # MLflow's scoring server answers 400 when the model raises on an input: its clients read
        # a model failure as the input's fault, so /invocations does too (the code stays ours).
        code = status or (400 if isinstance(error, PredictionFailed) else status_of(error))
        body = {
            "error_code": _MLFLOW_CODES.get(code, "BAD_REQUEST"),
            "message": message_of(error),
            "request_id": rid,
        }
        return JSONResponse(body, status_code=code, headers=headers)
    return JSONResponse(error_body(error, rid), status_code=status or error.status_code, headers=headers)


def unexpected_error() -> ServingError:
    """What an exception no layer expected is answered as: a 500 that quotes the request id."""
    return ServingError("internal error; quote the request id")


def install_error_handlers(app: FastAPI) -> None:
    """Route the errors raised inside the app (ours, FastAPI's validation, Starlette's 404/405)
    through the one renderer. Exceptions nobody expected are caught by the edge layer and
    rendered here too, so their 500 carries the request id and the security headers."""

    async def on_serving_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)
        return error_response(exc, request.scope)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        # FastAPI's own validation (query and path parameters): report locations, never inputs.
        assert isinstance(exc, RequestValidationError)
        details = [
            ErrorDetail(str(err.get("msg", "invalid")), field=".".join(str(p) for p in err.get("loc", ())))
            for err in exc.errors()
        ]
        return error_response(InvalidInput("the request parameters are invalid", details), request.scope)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = _HTTP_ERRORS.get(exc.status_code, ServingError)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        response = error_response(kind(message), request.scope, status=exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
