"""Operator endpoints: roll out the version the registry names now."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from model_api.api.models import ErrorResponse
from model_api.errors import ModelNotReady
from model_api.rollout import Rollout

router = APIRouter(prefix="/admin", tags=["admin"])


class ReloadAnswer(BaseModel):
    """What a reload did: reloaded, unchanged, failed or refused, and between which versions."""

    action: str
    from_version: str | None
    to_version: str | None
    message: str


@router.post(
    "/reload",
    response_model=ReloadAnswer,
    responses={503: {"model": ErrorResponse, "description": "The model is not loaded yet."}},
)
async def reload(request: Request, force: bool = False) -> ReloadAnswer:
    """Ask the registry which version the served URI names now and swap it in if it is new.

    A version that failed before is tried again; `force=true` reloads even the version served.
    The old model keeps serving if the new one fails to load, warm, or keep the input contract.
    """
    rollout: Rollout | None = getattr(request.app.state, "rollout", None)
    if rollout is None:
        raise ModelNotReady("the model is still loading")
    result = await rollout.reload(force=force, retry_failed=True)
    return ReloadAnswer(
        action=result.action,
        from_version=result.from_version,
        to_version=result.to_version,
        message=result.message,
    )
