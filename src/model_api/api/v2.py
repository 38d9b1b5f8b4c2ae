"""The Open Inference Protocol (KServe V2) over REST: health, server and model metadata, infer.

Every inference goes through the data plane like /predict (and so its batching and metrics).
Errors are {"error": "..."}: see `api/errors.py`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_api import __version__
from model_api.api import v2_codec, v2_metadata
from model_api.api.body import DataPlaneDep, read_json
from model_api.api.errors import request_id_of
from model_api.api.protocol import PREDICT_STATUSES, protocol_body, protocol_responses
from model_api.api.route import DataPlaneRoute
from model_api.responses import JSONResponse

SERVER_NAME = "model-api"

router = APIRouter(prefix="/v2", tags=["inference protocol v2"], route_class=DataPlaneRoute)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and the protocol extensions supported (none)."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": []}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """200 whenever the process is up."""
    return {"live": True}


@router.get("/health/ready", responses=protocol_responses(503))
async def server_ready(plane: DataPlaneDep) -> dict[str, bool]:
    """200 once the model is loaded and warmed; 503 while loading or draining."""
    plane.ready()
    return {"ready": True}


@router.get("/models/{name}", responses=protocol_responses(404, 503))
@router.get("/models/{name}/versions/{version}", responses=protocol_responses(404, 503))
async def model_metadata(name: str, plane: DataPlaneDep, version: str | None = None) -> dict[str, Any]:
    """The model's inputs and outputs, from its signature; 404 for a model or version not served."""
    return v2_metadata.model_metadata(plane.lookup(name, version))


@router.get("/models/{name}/ready", responses=protocol_responses(404, 503))
@router.get("/models/{name}/versions/{version}/ready", responses=protocol_responses(404, 503))
async def model_ready(name: str, plane: DataPlaneDep, version: str | None = None) -> dict[str, Any]:
    """200 when the served model is ready; 404 for a model or version not served; 503 draining."""
    predictor = plane.ready(name, version)
    return {"name": predictor.name, "ready": True}


INFER_BODY = protocol_body(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape", "data"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
                        "data": {"type": "array"},
                        "parameters": {"type": "object"},
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            },
        },
    }
)
INFER_RESPONSES = protocol_responses(*PREDICT_STATUSES)


@router.post("/models/{name}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
@router.post("/models/{name}/versions/{version}/infer", responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, plane: DataPlaneDep, version: str | None = None) -> Response:
    """Predict: one input per feature column, or one 2-D input in signature order."""
    request_id = request_id_of(request.scope)
    route = "/v2/models/{name}/versions/{version}/infer" if version else "/v2/models/{name}/infer"
    # 503/404 before reading the body
    with plane.admit(name, version, client=request, route=route, request_id=request_id) as admission:
        payload = admission.payload = await read_json(request, untyped_is_json=True)
        parsed = v2_codec.parse_infer(payload)
        result = await plane.infer(admission, parsed.inference)
        predictor = result.predictor
        body = admission.answer = {
            "model_name": predictor.name,
            "model_version": predictor.version,
            "id": parsed.id if parsed.id is not None else request_id,
            "parameters": {"content_type": "np"},
            "outputs": v2_codec.encode_outputs(parsed, result),
        }
    return JSONResponse(body)
