"""The service's error hierarchy (no web framework here: `api/errors.py` renders these as answers).

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
 ├── ClientDisconnected (499 client_disconnected)
 ├── ModelNotReady (503 model_not_ready)
 ├── Overloaded (503 overloaded, with Retry-After)
 ├── RequestTimeout (504 timeout)
 │    └── Expired (504 timeout: its budget ran out before it reached the model)
 └── PredictionFailed (500 prediction_failed)

ModelLoadError (not an HTTP error: the model could not be loaded at startup)
 └── InvalidModelURI (the URI names no form the service can load)

Every HTTP error is answered by `api/errors.py`: {"error": {"code", "message", "details",
"request_id"}} on the service's own routes, {"error": "..."} on the KServe protocol routes (/v1/,
/v2/). Details name the row and field at fault, never the offending value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class Overloaded(ServingError):
    """The worker already holds as many prediction requests as it admits (running and queued):
    refused at once, before the body is read; answered with `Retry-After: retry_after_s`."""

    retry_after_s: int = 1
    status_code = 503
    code = "overloaded"


class ClientDisconnected(ServingError):
    """The client went away while its request waited; answered with nginx's 499, which nobody reads."""

    status_code = 499
    code = "client_disconnected"


class RequestTimeout(ServingError):
    """The prediction took longer than the per-request timeout; the request id is in the log."""

    status_code = 504
    code = "timeout"


class Expired(RequestTimeout):
    """The request's budget (the request timeout, or X-Request-Timeout) ran out before it reached
    the model: answered without calling the model."""


class PredictionFailed(ServingError):
    """The model raised while predicting; the request id ties this answer to the log line."""

    status_code = 500
    code = "prediction_failed"


class ModelLoadError(Exception):
    """The model could not be resolved or loaded; the message names the URI and what to check.

    `transient`: the registry could not be reached (worth a retry). `final`: the message says
    all there is (the model's own error), so no retry and no hint is added."""

    def __init__(self, message: str, *, transient: bool = False, final: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.final = final


class InvalidModelURI(ModelLoadError):
    """The model URI is not one of the forms the service loads."""


_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|\[[^\]]*\]|\{[^}]*\}|-?\d+(\.\d+)?([eE][-+]?\d+)?""")


def describe_error(exc: BaseException) -> str:
    """A model's exception for the log: its type and the first line of its message with quoted
    text, lists, maps and numbers masked (model errors often quote the rows they were given).
    MODEL_API_LOG_LEVEL=debug logs the full text (README: "Debugging a model's errors")."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    masked = _QUOTED.sub("…", text)[:200]
    name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    return f"{name}: {masked}" if masked else name
