"""What the KServe protocols (V1 and the Open Inference Protocol, V2) document alike: the statuses
their routes answer, in their error shape ({"error": "..."}, rendered by `api/errors.py`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ProtocolError(BaseModel):
    """An error as the KServe protocols answer it."""

    error: str


_MEANINGS = {
    400: "The request cannot be used: not JSON, the wrong shape, or rows that break the signature.",
    404: "The model (or version) named is not the one served here.",
    413: "The body or the number of rows is over the limit.",
    415: "The body is not sent as a media type the route reads.",
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
