"""POST /predict: rows as records or in signature order, labels and class probabilities."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_api.api.deps import StateDep, read_json
from model_api.api.inference import predict_counted
from model_api.api.models import ERROR_RESPONSES, PredictResponse
from model_api.errors import ErrorDetail, InvalidInput, request_id_of
from model_api.responses import JSONResponse
from model_api.schemas import PredictRequest

router = APIRouter()

REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}


@router.post(
    "/predict",
    tags=["model"],
    response_model=PredictResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=REQUEST_BODY,
)
async def predict(request: Request, state: StateDep) -> Response:
    """Predict one label per row; with `return_probabilities`, each row's class probabilities too."""
    state.require_predictor()  # 503 before reading a body the service cannot serve yet
    payload = await read_json(request)
    # Taken after the last await before predict(): a rollout may have swapped models meanwhile.
    predictor = state.require_predictor()

    def parse() -> PredictRequest:
        parsed = predictor.schema.parse_predict(payload, state.settings.max_rows)
        if parsed.return_probabilities and not predictor.has_probabilities:
            raise InvalidInput(
                "this model gives no class probabilities",
                [ErrorDetail("the model has no predict_proba", field="return_probabilities")],
            )
        return parsed

    _, result = await predict_counted(state, predictor, parse)
    body: dict[str, Any] = {"predictions": result.labels}
    if result.probabilities is not None:
        body["probabilities"] = result.probabilities
    body["model_name"] = predictor.name
    body["model_version"] = predictor.version
    body["request_id"] = request_id_of(request)
    return JSONResponse(body)
