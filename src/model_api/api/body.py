"""What every route reads from a request: the data plane, and a JSON body."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from model_api.dataplane import DataPlane
from model_api.errors import ClientDisconnected, MalformedJSON, UnsupportedMediaType

# Dependencies are `async def`: FastAPI would run a plain `def` in a thread pool on every request.


async def get_dataplane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request) -> bytes:
    """The request's body. Raises ClientDisconnected (499: nobody reads it, and it is not the
    service's error) when the client went away before sending it all; Starlette raises its own
    ClientDisconnect, which would otherwise be answered as an unexpected 500."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientDisconnected("the client disconnected before its body was read") from None


async def read_json(request: Request, *, untyped_is_json: bool = False) -> Any:
    """Read and parse a JSON body. Its size is bounded while it is read by the body-limit
    middleware, for every route.

    With `untyped_is_json`, a body sent without a Content-Type is read as JSON (some inference
    protocol clients send none). Raises UnsupportedMediaType (415) or MalformedJSON (400), and
    ClientDisconnected (499) when the client goes away before its body is read."""
    content_type = request.headers.get("content-type")
    if content_type is None and untyped_is_json:
        content_type = "application/json"
    if not _is_json(content_type or ""):
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    body = await read_body(request)
    if not body:
        raise MalformedJSON("the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
