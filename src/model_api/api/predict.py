"""POST /predict: rows as records or in signature order, labels and class probabilities."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_api.api.body import DataPlaneDep, read_json
from model_api.api.errors import request_id_of
from model_api.api.models import ERROR_RESPONSES, PredictResponse
from model_api.api.route import DataPlaneRoute
from model_api.dataplane import InferenceRequest, InferenceResult
from model_api.errors import ErrorDetail, InvalidInput
from model_api.responses import JSONResponse
from model_api.rows import Records, Rows
from model_api.values import MAX_DETAILS, unknown_detail

router = APIRouter(route_class=DataPlaneRoute)

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}
FIELDS = ("instances", "features", "return_probabilities", "params")


def parse_predict(payload: Any) -> InferenceRequest:
    """The /predict envelope: {"instances": [{...}]} (records) or {"features": [[...]]} (rows in
    signature order), "return_probabilities", and the model's "params". Raises InvalidInput (422)."""
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object with 'instances' or 'features'")
    unknown = sorted(k for k in payload if k not in FIELDS)
    if unknown:
        raise InvalidInput(
            "unknown top-level field(s); use 'instances' or 'features', 'return_probabilities' and 'params'",
            [unknown_detail("unknown field", k) for k in unknown[:MAX_DETAILS]],
        )
    proba = payload.get("return_probabilities", False)
    if type(proba) is not bool:
        raise InvalidInput(
            "'return_probabilities' must be true or false",
            [ErrorDetail("expected true or false", field="return_probabilities")],
        )
    if ("instances" in payload) == ("features" in payload):
        raise InvalidInput("send exactly one of 'instances' (records) or 'features' (rows)")
    params = payload.get("params")
    if "instances" in payload:
        return InferenceRequest(Records(payload["instances"], "instances"), params, proba)
    return InferenceRequest(Rows(payload["features"], "features"), params, proba)


def render_predict(result: InferenceResult, request_id: str | None) -> dict[str, Any]:
    """Labels, probabilities per row keyed by class (when asked), model name and version."""
    predictor = result.predictor
    body: dict[str, Any] = {"predictions": result.prediction.labels}
    probabilities = result.prediction.probabilities
    if probabilities is not None:
        keys = [str(c) for c in predictor.classes]
        body["probabilities"] = [dict(zip(keys, row, strict=True)) for row in probabilities.tolist()]
    body["model_name"] = predictor.name
    body["model_version"] = predictor.version
    body["request_id"] = request_id
    return body


@router.post(
    "/predict",
    tags=["model"],
    response_model=PredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=REQUEST_BODY,
)
async def predict(request: Request, plane: DataPlaneDep) -> Response:
    """Predict one label per row; with `return_probabilities`, each row's class probabilities too."""
    request_id = request_id_of(request.scope)
    # 503 before reading a body the service cannot serve yet
    with plane.admit(client=request, route="/predict", request_id=request_id) as admission:
        payload = admission.payload = await read_json(request)
        result = await plane.infer(admission, parse_predict(payload))
        body = admission.answer = render_predict(result, request_id)
    return JSONResponse(body)
