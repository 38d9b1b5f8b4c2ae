"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from model_api.errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType
from model_api.predictor import Predictor
from model_api.state import ServiceState

# Dependencies are `async def`: FastAPI would run a plain `def` in a thread pool on every request.


async def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


async def get_predictor(request: Request) -> Predictor:
    state: ServiceState = request.app.state.service
    return state.require_predictor()


StateDep = Annotated[ServiceState, Depends(get_state)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request, limit: int, *, untyped_is_json: bool = False) -> Any:
    """Read and parse a JSON body, refusing it as soon as it is known to be over `limit` bytes.

    With `untyped_is_json`, a body sent without a Content-Type is read as JSON (some inference
    protocol clients send none)."""
    content_type = request.headers.get("content-type")
    if content_type is None and untyped_is_json:
        content_type = "application/json"
    if not _is_json(content_type or ""):
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    too_large = PayloadTooLarge(f"the body is larger than the {limit}-byte limit")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise MalformedJSON("the body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
