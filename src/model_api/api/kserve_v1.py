"""The KServe V1 protocol: model readiness and `:predict` with `instances`, answered with `predictions`.

Instances are records keyed by feature name or rows in signature order. Every prediction goes
through the same predictor as /predict; errors are {"error": "..."} (see `api/protocol.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_api.api.deps import PredictorDep, StateDep, read_json
from model_api.api.inference import predict_counted
from model_api.api.protocol import (
    PREDICT_STATUSES,
    ProtocolRoute,
    protocol_body,
    protocol_responses,
    require_model,
)
from model_api.errors import BadRequest
from model_api.predictor import Predictor
from model_api.responses import JSONResponse
from model_api.schemas import Batch

router = APIRouter(prefix="/v1", tags=["inference protocol v1"], route_class=ProtocolRoute)


@dataclass(frozen=True)
class V1Request:
    """A validated V1 predict body."""

    batch: Batch
    return_probabilities: bool = False


def parse_v1(payload: Any, predictor: Predictor, max_rows: int) -> V1Request:
    """{"instances": [...]}: records (objects) or rows in signature order (lists)."""
    if type(payload) is not dict or "instances" not in payload:
        raise BadRequest("the body must be a JSON object with 'instances'")
    unknown = sorted(str(k)[:64] for k in payload if k not in ("instances", "parameters"))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; send 'instances'")
    instances = payload["instances"]
    schema = predictor.schema
    if type(instances) is list and instances and type(instances[0]) is dict:
        return V1Request(schema.parse_records(instances, max_rows, "instances"))
    return V1Request(schema.parse_rows(instances, max_rows, "instances"))


@router.get("/models", responses=protocol_responses(503))
async def list_models(predictor: PredictorDep) -> dict[str, list[str]]:
    """The served model's name."""
    return {"models": [predictor.name]}


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
async def predict(name: str, request: Request, state: StateDep) -> Response:
    """One prediction per instance, in order."""
    require_model(state.require_predictor(), name)  # 503/404 before reading the body
    payload = await read_json(request, untyped_is_json=True)
    # Taken after the last await before predict(): a rollout may have swapped models meanwhile.
    predictor = state.require_predictor()
    _, result = await predict_counted(
        state, predictor, lambda: parse_v1(payload, predictor, state.settings.max_rows)
    )
    return JSONResponse({"predictions": result.labels})


# After :predict: '{name}' would also match 'NAME:predict', and the first route that matches the
# path answers a wrong method (405) with its Allow header.
@router.get("/models/{name}", responses=protocol_responses(404, 503))
async def model_ready(name: str, state: StateDep) -> dict[str, Any]:
    """200 with ready=true when the named model is served and ready; 404 for another name."""
    predictor = state.require_ready()
    require_model(predictor, name)
    return {"name": predictor.name, "ready": True}
