"""The service's error hierarchy and the one handler that renders every error as JSON.

ServingError (500 internal_error)
 ├── BadRequest (400 bad_request)
 │    └── MalformedJSON (400 malformed_json)
 ├── Unauthorized (401 unauthorized)
 ├── InvalidInput (422 invalid_input)
 ├── NotFound (404 not_found)
 ├── MethodNotAllowed (405 method_not_allowed)
 ├── PayloadTooLarge (413 payload_too_large)
 │    └── TooManyRows (413 too_many_rows)
 ├── UnsupportedMediaType (415 unsupported_media_type)
 ├── ModelNotReady (503 model_not_ready)
 ├── RequestTimeout (504 timeout)
 └── PredictionFailed (500 prediction_failed)

ModelLoadError (not an HTTP error: the model could not be loaded at startup)
 └── InvalidModelURI (the URI names no form the service can load)

Every HTTP error is answered as {"error": {"code", "message", "details", "request_id"}}; details
name the row and field at fault, never the offending value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from model_api.responses import JSONResponse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorDetail:
    """One fault in a request: where it is (row, field) and what is wrong with it."""

    message: str
    row: int | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.row is not None:
            out["row"] = self.row
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out


@dataclass
class ServingError(Exception):
    """Base of every error the service answers with; carries its HTTP status and a stable code."""

    message: str
    details: list[ErrorDetail] = field(default_factory=list)
    status_code = 500
    code = "internal_error"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class BadRequest(ServingError):
    """The request is not a request this route understands (wrong shape of body)."""

    status_code = 400
    code = "bad_request"


class MalformedJSON(BadRequest):
    """The body is not valid JSON (NaN and Infinity literals included)."""

    code = "malformed_json"


class Unauthorized(ServingError):
    """No API key, or not one of the configured keys, on a route that requires one."""

    status_code = 401
    code = "unauthorized"


class InvalidInput(ServingError):
    """The body is JSON of the right shape, but rows or features break the model's signature."""

    status_code = 422
    code = "invalid_input"


class NotFound(ServingError):
    """No such route or model."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServingError):
    """The route exists, but not for this method."""

    status_code = 405
    code = "method_not_allowed"


class PayloadTooLarge(ServingError):
    """The body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


class TooManyRows(PayloadTooLarge):
    """The request carries more rows than one request may."""

    code = "too_many_rows"


class UnsupportedMediaType(ServingError):
    """The body is not sent as application/json."""

    status_code = 415
    code = "unsupported_media_type"


class ModelNotReady(ServingError):
    """The model is not loaded and warmed yet, or the service is draining."""

    status_code = 503
    code = "model_not_ready"


class RequestTimeout(ServingError):
    """The prediction took longer than the per-request timeout; the request id is in the log."""

    status_code = 504
    code = "timeout"


class PredictionFailed(ServingError):
    """The model raised while predicting; the request id ties this answer to the log line."""

    status_code = 500
    code = "prediction_failed"


class ModelLoadError(Exception):
    """The model could not be resolved or loaded; the message names the URI and what to check."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class InvalidModelURI(ModelLoadError):
    """The model URI is not one of the forms the service loads."""


def request_id_of(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def error_body(
    code: str, message: str, details: list[dict[str, Any]], request_id: str | None
) -> dict[str, Any]:
    """The one JSON shape every error is answered with."""
    return {"error": {"code": code, "message": message, "details": details, "request_id": request_id}}


def render(error: ServingError, request_id: str | None) -> Response:
    body = error_body(error.code, error.message, [d.to_dict() for d in error.details], request_id)
    return JSONResponse(body, status_code=error.status_code)


def answer(request: Request, error: ServingError) -> Response:
    """Render `error` for this request, leaving its code where the access middleware counts it."""
    request.state.error_code = error.code
    return render(error, request_id_of(request))


_HTTP_ERRORS: dict[int, type[ServingError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise through the one JSON error shape."""

    async def on_serving_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)
        rid = request_id_of(request)
        if exc.status_code >= 500:  # the detail goes to the log, tied to the answer by the request id
            cause = exc.__cause__ or exc
            logger.error(
                "%s (request_id=%s)", exc.message, rid, exc_info=(type(cause), cause, cause.__traceback__)
            )
        return answer(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        # FastAPI's own validation (query and path parameters): report locations, never inputs.
        assert isinstance(exc, RequestValidationError)
        details = [
            ErrorDetail(
                message=str(err.get("msg", "invalid")),
                field=".".join(str(p) for p in err.get("loc", ())),
            )
            for err in exc.errors()
        ]
        return answer(request, InvalidInput("the request is invalid", details))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _HTTP_ERRORS.get(exc.status_code, ServingError)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        error = kind(message)
        response = answer(request, error)
        response.status_code = exc.status_code
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id_of(request)
        logger.error("unhandled error (request_id=%s)", rid, exc_info=exc)
        return render(ServingError("internal error; quote the request id"), rid)

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
