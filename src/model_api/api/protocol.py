"""What the KServe protocols (V1 and the Open Inference Protocol, V2) share: their error shape and
the check that a request names the served model.

Both protocols answer errors as {"error": "<message>"}, the shape their clients parse, with the
statuses the Open Inference Protocol gives: 400 for a request the server cannot use, 404 for a
model (or version) it does not serve, 503 while the model loads or the service drains; 413 for an
oversized body and 500 for a model failure keep their meaning. The service's own routes keep the
service's error shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from model_api.errors import ModelNotReady, NotFound, PayloadTooLarge, ServingError, request_id_of
from model_api.predictor import Predictor
from model_api.responses import JSONResponse

logger = logging.getLogger(__name__)

NAME_SHOWN = 64
"""How much of a client-chosen name an error message repeats."""

MAX_MESSAGE_DETAILS = 5
"""How many faults (row and field) an error message lists."""


class ProtocolError(BaseModel):
    """An error as the KServe protocols answer it."""

    error: str


_MEANINGS = {
    400: "The request cannot be used: not JSON, the wrong shape, or rows that break the signature.",
    404: "The model (or version) named is not the one served here.",
    413: "The body or the number of rows is over the limit.",
    500: "The model failed; the request id is in the log.",
    503: "The model is loading or the service is draining.",
    504: "The prediction took longer than the request timeout.",
}


def protocol_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a protocol route: each status it can answer, in the protocols' shape."""
    return {s: {"model": ProtocolError, "description": _MEANINGS[s]} for s in statuses}


PREDICT_STATUSES = (400, 404, 413, 500, 503, 504)
"""What a protocol prediction route can answer besides 200 (401 too when API keys are on)."""


def protocol_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The `openapi_extra=` of a route whose JSON body is read by hand."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def status_of(error: ServingError) -> int:
    """The protocol status of one of the service's errors."""
    if isinstance(error, ModelNotReady | NotFound | PayloadTooLarge) or error.status_code >= 500:
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


def protocol_error(request: Request, error: ServingError) -> Response:
    """Render `error` as {"error": "..."}; a server-side failure is logged with the request id."""
    status = status_of(error)
    if status >= 500 and not isinstance(error, ModelNotReady):
        cause = error.__cause__ or error
        logger.error(
            "%s (request_id=%s)",
            error.message,
            request_id_of(request),
            exc_info=(type(cause), cause, cause.__traceback__),
        )
    return JSONResponse({"error": message_of(error)}, status_code=status)


class ProtocolRoute(APIRoute):
    """A route whose errors, its dependencies' included, are answered in the protocols' shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServingError as exc:
                return protocol_error(request, exc)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
                return JSONResponse({"error": f"invalid request parameters: {fields}"}, status_code=400)
            except HTTPException as exc:
                message = exc.detail if isinstance(exc.detail, str) else "request failed"
                return JSONResponse({"error": message}, status_code=exc.status_code)

        return route


def require_model(predictor: Predictor, name: str, version: str | None = None) -> None:
    """Raise NotFound unless `name` (and `version`, when given) is the served model."""
    if name != predictor.name:
        shown = name[:NAME_SHOWN]
        raise NotFound(f"model '{shown}' is not served here; this server serves '{predictor.name}'")
    if version is not None and version != predictor.version:
        served = predictor.version if predictor.version is not None else "no registry version"
        raise NotFound(
            f"version '{version[:NAME_SHOWN]}' of '{predictor.name}' is not served here; "
            f"the served version is {served}"
        )
