"""MLflow's scoring protocol: `POST /invocations`, `GET /ping`, `GET /version`, as `mlflow models
serve` (and the MLflow containers on SageMaker and Databricks) answer them, so their clients work
unchanged.

A body is JSON in one of MLflow's four forms (`dataframe_split`, `dataframe_records`,
`instances`, `inputs`) with optional `params`, or a CSV or Parquet table; the answer is
{"predictions": ...} exactly as MLflow renders the model's output. Requests go through the data
plane like every other protocol (limits, batching, metrics, API keys). Errors carry MLflow's keys
(`error_code`, `message`): see `api/errors.py`.
Source: https://mlflow.org/docs/latest/deployment/deploy-model-locally (the scoring server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response

from model_api.api.body import DataPlaneDep, read_body
from model_api.api.errors import request_id_of
from model_api.api.protocol import PREDICT_STATUSES, protocol_responses
from model_api.api.route import DataPlaneRoute
from model_api.dataplane import InferenceRequest
from model_api.errors import BadRequest, MalformedJSON, UnsupportedMediaType
from model_api.inputs import (
    JSON_FORMS,
    ModelInput,
    ModelSpec,
    check_envelope,
    parse_mlflow_json,
    parse_table,
)
from model_api.inputs import (
    media_type as media_of,
)

router = APIRouter(tags=["mlflow scoring protocol"], route_class=DataPlaneRoute)


class MlflowError(BaseModel):
    """An error as MLflow's scoring server answers it (and the request id)."""

    error_code: str
    message: str
    request_id: str | None = None


def mlflow_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of an MLflow protocol route, in MLflow's error shape."""
    return {s: {**meaning, "model": MlflowError} for s, meaning in protocol_responses(*statuses).items()}


JSON = "application/json"
TABLES = ("text/csv", "application/vnd.apache.parquet")


@dataclass(frozen=True)
class JsonInvocation:
    """A JSON body in one of MLflow's four forms. On the contract path, records and columns go
    through our contract (merged batches, fast paths, errors naming row and field); anything else
    is parsed by MLflow for the pyfunc model."""

    payload: dict[str, Any]

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        contract = spec.contract
        payload = self.payload
        if contract is not None:
            records = payload.get("dataframe_records", payload.get("instances"))
            if "dataframe_records" in payload or (
                type(records) is list and records and type(records[0]) is dict
            ):
                return contract.parse_records(records, max_rows, next(k for k in payload if k in JSON_FORMS))
            split = payload.get("dataframe_split")
            if (
                isinstance(split, dict)
                and list(split.get("columns") or ()) == list(contract.names)
                and set(split) <= {"columns", "data", "index"}
            ):
                return contract.parse_rows(split.get("data"), max_rows, "dataframe_split.data")
        return parse_mlflow_json(payload, spec, max_rows)


@dataclass(frozen=True)
class TableInvocation:
    """A CSV or Parquet body, parsed by MLflow for the pyfunc model."""

    body: bytes
    media: str

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        return parse_table(self.body, self.media, spec, max_rows)


def parse_invocation(body: bytes, content_type: str | None) -> InferenceRequest:
    """The request's envelope: its media type and, for JSON, its params. Raises
    UnsupportedMediaType (415), MalformedJSON (400) or BadRequest (400)."""
    media = media_of(content_type)
    if media in TABLES:
        if not body:
            raise BadRequest("the body is empty; send a table")
        return InferenceRequest(TableInvocation(body, media))
    if media != JSON:
        raise UnsupportedMediaType(f"send {JSON}, text/csv or application/vnd.apache.parquet")
    if not body:
        raise MalformedJSON("the body is empty; send a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    check_envelope(payload)
    return InferenceRequest(JsonInvocation(payload), payload.get("params"))


INVOCATIONS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "description": "Exactly one of MLflow's four forms, and optionally the model's params.",
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "properties": {"columns": {"type": "array"}, "data": {"type": "array"}},
                            "required": ["data"],
                        },
                        "dataframe_records": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                        "instances": {"type": "array", "minItems": 1},
                        "inputs": {"type": ["object", "array"]},
                        "params": {"type": "object"},
                    },
                    "oneOf": [{"required": [form]} for form in JSON_FORMS],
                    "additionalProperties": False,
                }
            },
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/invocations", responses=mlflow_responses(*PREDICT_STATUSES, 415), openapi_extra=INVOCATIONS_BODY
)
async def invocations(request: Request, plane: DataPlaneDep) -> Response:
    """Predict, as MLflow's scoring server does: {"predictions": ...}."""
    request_id = request_id_of(request.scope)
    # 503 before reading the body
    with plane.admit(client=request, route="/invocations", request_id=request_id) as admission:
        body = admission.payload = await read_body(request)
        result = await plane.infer(admission, parse_invocation(body, request.headers.get("content-type")))
        content = admission.answer = orjson.dumps(
            {"predictions": result.prediction.labels}, option=orjson.OPT_SERIALIZE_NUMPY
        )
    return Response(content, media_type=JSON)


@router.get(
    "/ping",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Loaded and warmed."},
        **mlflow_responses(503),
    },
)
async def ping(plane: DataPlaneDep) -> Response:
    """200 once the model is loaded and warmed (MLflow's health check); 503 while loading or draining."""
    plane.ready()
    return PlainTextResponse("\n")


@router.get("/version", response_class=PlainTextResponse)
async def version() -> str:
    """The MLflow version the model is served with."""
    from mlflow.version import VERSION

    return str(VERSION)
