"""Response models of the service's own endpoints, for the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    """What went wrong: a stable code, a message, and where (row, field) when it is the input."""

    code: str = Field(examples=["invalid_input"])
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error the service answers with."""

    error: ErrorInfo


class Health(BaseModel):
    """Liveness: the process is up."""

    status: str = Field(examples=["ok"])


class Ready(BaseModel):
    """Readiness: the model is loaded and warmed."""

    status: str = Field(examples=["ready"])
    model_name: str
    model_version: str | None


class PredictResponse(BaseModel):
    """One label per row, in request order; class probabilities when asked."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | None = Field(
        default=None, description="Per row, the probability of each class (present when asked)."
    )
    model_name: str
    model_version: str | None
    request_id: str


class ColumnInfo(BaseModel):
    """One input feature as the service validates it."""

    name: str
    type: str
    required: bool
    categories: list[Any] | None = None
    accepts_unknown_categories: bool = True
    shape: list[int] | None = Field(default=None, description="A tensor input's shape (-1: any size).")
    spec: dict[str, Any] | None = Field(
        default=None,
        description="The input as MLflow's signature states it (pyfunc path), arrays and objects included.",
    )


class RolloutInfo(BaseModel):
    """How the service follows the registry: what it follows, and the last check."""

    follows: str | None = Field(description="The alias, stage or 'latest' followed; null for a fixed URI.")
    interval_s: float
    accept_schema_change: bool
    last_check_at: datetime | None
    last_outcome: str | None = Field(description="reloaded, unchanged, failed or refused")
    last_error: str | None
    failed_version: str | None
    schema_changes: list[str]


class ShadowInfo(BaseModel):
    """The shadow challenger: what it is, and how much of the traffic it scores."""

    uri: str = Field(description="MODEL_API_SHADOW_URI, followed like the served model.")
    name: str | None
    version: str | None = Field(description="The challenger's version; null until it is loaded.")
    sample_rate: float
    error: str | None = Field(description="Why the challenger is not loaded, when it is not.")
    rollout: RolloutInfo | None


class ModelInfo(BaseModel):
    """Which model is served, where it came from, and its contract."""

    name: str
    version: str | None
    alias: str | None
    uri: str
    run_id: str | None
    source: str
    flavor: str
    estimator: str
    path: str = Field(
        description="contract: our checks and the raw estimator (merged batches, fast paths); "
        "pyfunc: MLflow's own parsing, enforcement and pyfunc predict, one request per call."
    )
    fast_path: str | None = Field(
        default=None,
        description="The compiled fast path answering for the model (evaluator, pipeline, trees), "
        "checked bit-identical to it at load; null when the model itself answers.",
    )
    fast_path_reason: str = Field(
        default="",
        description="How the fast path was checked (rows, threshold edges, NaN), or why the model "
        "serves without one.",
    )
    inputs: list[ColumnInfo]
    params: Any = Field(
        default=None, description="The model's ParamSchema: the params it takes, with defaults."
    )
    predict_fn: str = Field(description="The pyfunc predict function (pyfunc_predict_fn).")
    outputs: Any
    classes: list[Any] | None
    probabilities: bool
    input_example: list[dict[str, Any]]
    loaded_at: datetime
    load_seconds: float
    rollout: RolloutInfo | None
    shadow: ShadowInfo | None = Field(
        default=None, description="The shadow challenger (MODEL_API_SHADOW_URI); null when off."
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON."},
    413: {"model": ErrorResponse, "description": "The body or the number of rows is over the limit."},
    415: {"model": ErrorResponse, "description": "The body is not sent as application/json."},
    422: {"model": ErrorResponse, "description": "The rows break the model's signature."},
    500: {"model": ErrorResponse, "description": "The model failed; the request id is in the log."},
    503: {
        "model": ErrorResponse,
        "description": "The model is loading, the service is draining, or the worker is overloaded "
        "(code overloaded, with a Retry-After header in seconds).",
    },
    504: {
        "model": ErrorResponse,
        "description": "The request took longer than its budget (the request timeout or X-Request-Timeout).",
    },
}
