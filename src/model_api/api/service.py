"""The service's own endpoints: liveness, readiness, model information and metrics."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from model_api.api.body import DataPlaneDep
from model_api.api.models import (
    ColumnInfo,
    ErrorResponse,
    Health,
    ModelInfo,
    Ready,
    RolloutInfo,
    ShadowInfo,
)
from model_api.dataplane import DataPlane

router = APIRouter()


@router.get("/health", response_model=Health, tags=["service"])
async def health() -> Health:
    """Liveness: 200 whenever the process is up. Never touches the model."""
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Ready,
    tags=["service"],
    responses={503: {"model": ErrorResponse, "description": "Loading or draining."}},
)
async def ready(plane: DataPlaneDep) -> Ready:
    """Readiness: 200 once the model is loaded and warmed; 503 while loading or draining."""
    predictor = plane.ready()
    return Ready(status="ready", model_name=predictor.name, model_version=predictor.version)


@router.get(
    "/model/info",
    response_model=ModelInfo,
    tags=["model"],
    responses={503: {"model": ErrorResponse, "description": "Loading or draining."}},
)
async def model_info(request: Request, plane: DataPlaneDep) -> ModelInfo:
    """The served model: name, version, alias, run, source, flavor, signature, load time, and how
    the service follows the registry (the last reload check and its outcome)."""
    predictor = plane.served()
    rollout = getattr(request.app.state, "rollout", None)
    loaded = predictor.loaded
    signature = loaded.signature
    outputs = signature.outputs.to_dict() if signature is not None and signature.outputs else None
    return ModelInfo(
        name=loaded.name,
        version=loaded.version,
        alias=loaded.ref.alias,
        uri=loaded.ref.uri,
        run_id=loaded.run_id,
        source=loaded.source,
        flavor=loaded.flavor,
        estimator=loaded.estimator_class,
        path="contract" if predictor.schema is not None else "pyfunc",
        fast_path=predictor.fast.description if predictor.fast is not None else None,
        fast_path_reason=predictor.fast_reason,
        inputs=[
            ColumnInfo(
                name=f.name,
                type=f.kind.value,
                required=f.required,
                categories=list(f.categories) if f.categories is not None else None,
                accepts_unknown_categories=f.accepts_unknown,
            )
            for f in predictor.schema.features
        ]
        if predictor.schema is not None
        else _signature_inputs(signature),
        params=signature.params.to_dict() if signature is not None and signature.params else None,
        predict_fn=loaded.predict_fn,
        outputs=outputs,
        classes=predictor.classes or None,
        probabilities=predictor.has_probabilities,
        input_example=list(predictor.schema.example) if predictor.schema is not None else [],
        loaded_at=loaded.loaded_at,
        load_seconds=round(loaded.load_seconds, 3),
        rollout=RolloutInfo(**dataclasses.asdict(rollout.status)) if rollout is not None else None,
        shadow=_shadow_info(request, plane),
    )


def _shadow_info(request: Request, plane: DataPlane) -> ShadowInfo | None:
    shadow = plane.watch.shadow if plane.watch is not None else None
    if shadow is None:
        return None
    challenger = shadow.predictor
    rollout = getattr(request.app.state, "shadow_rollout", None)
    return ShadowInfo(
        uri=shadow.settings.model_uri,
        name=challenger.name if challenger is not None else None,
        version=challenger.version if challenger is not None else None,
        sample_rate=shadow.sample_rate,
        error=shadow.error,
        rollout=RolloutInfo(**dataclasses.asdict(rollout.status)) if rollout is not None else None,
    )


def _signature_inputs(signature: Any) -> list[ColumnInfo]:
    """The inputs MLflow enforces, for a model on the pyfunc path: columns or tensors."""
    if signature is None or signature.inputs is None:
        return []
    out = []
    for i, spec in enumerate(signature.inputs.to_dict()):
        shape = spec.get("tensor-spec", {}).get("shape") if "tensor-spec" in spec else None
        out.append(
            ColumnInfo(
                name=str(spec.get("name", f"input-{i}")),
                type=str(spec.get("type")),
                required=bool(spec.get("required", True)),
                shape=shape,
                spec=spec,
            )
        )
    return out


@router.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
async def metrics(plane: DataPlaneDep) -> Response:
    """Prometheus metrics of this process (of every worker with several)."""
    return Response(plane.metrics.render(), media_type=plane.metrics.content_type)
