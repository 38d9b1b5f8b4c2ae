"""The KServe V1 protocol: model readiness and `:predict` with `instances`, answered with `predictions`.

Instances are records keyed by feature name or rows in signature order. Every prediction goes
through the data plane like /predict; errors are {"error": "..."} (see `api/errors.py`).
Source: KServe's V1 data plane (https://kserve.github.io/website/docs/concepts/architecture/data-plane/v1-protocol).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_api.api.body import DataPlaneDep, read_json
from model_api.api.errors import request_id_of
from model_api.api.protocol import PREDICT_STATUSES, protocol_body, protocol_responses
from model_api.api.route import DataPlaneRoute
from model_api.dataplane import InferenceRequest
from model_api.errors import BadRequest
from model_api.responses import JSONResponse
from model_api.rows import Instances

router = APIRouter(prefix="/v1", tags=["inference protocol v1"], route_class=DataPlaneRoute)


def parse_v1(payload: Any) -> InferenceRequest:
    """{"instances": [...], "parameters": {...}}: records (objects) or rows in signature order
    (lists), read as MLflow reads `instances`; `parameters` are the model's params. Raises BadRequest."""
    if type(payload) is not dict or "instances" not in payload:
        raise BadRequest("the body must be a JSON object with 'instances'")
    unknown = sorted(str(k)[:64] for k in payload if k not in ("instances", "parameters"))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; send 'instances'")
    return InferenceRequest(Instances(payload["instances"]), payload.get("parameters"))


@router.get("/models", responses=protocol_responses(503))
async def list_models(plane: DataPlaneDep) -> dict[str, list[str]]:
    """The served model's name."""
    return {"models": [plane.served().name]}


V1_BODY = protocol_body(
    {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "items": {"type": ["object", "array"]},
                "description": "Records keyed by feature name, or rows in signature order.",
            },
            "parameters": {"type": "object"},
        },
        "additionalProperties": False,
    }
)


@router.post("/models/{name}:predict", responses=protocol_responses(*PREDICT_STATUSES), openapi_extra=V1_BODY)
async def predict(name: str, request: Request, plane: DataPlaneDep) -> Response:
    """One prediction per instance, in order."""
    route, request_id = "/v1/models/{name}:predict", request_id_of(request.scope)
    # 503/404 before reading the body
    with plane.admit(name, client=request, route=route, request_id=request_id) as admission:
        payload = admission.payload = await read_json(request, untyped_is_json=True)
        result = await plane.infer(admission, parse_v1(payload))
        body = admission.answer = {"predictions": result.prediction.labels}
    return JSONResponse(body)


# After :predict: '{name}' would also match 'NAME:predict', and the first route that matches the
# path answers a wrong method (405) with its Allow header.
@router.get("/models/{name}", responses=protocol_responses(404, 503))
async def model_ready(name: str, plane: DataPlaneDep) -> dict[str, Any]:
    """200 with ready=true when the named model is served and ready; 404 for another name."""
    predictor = plane.ready(name)
    return {"name": predictor.name, "ready": True}
