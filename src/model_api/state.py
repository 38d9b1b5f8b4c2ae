"""What the running service knows about itself: its settings, metrics, and the model it serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from model_api.errors import ModelNotReady
from model_api.metrics import Metrics
from model_api.predictor import Predictor
from model_api.settings import Settings


@dataclass
class RolloutStatus:
    """What /model/info says about following the registry."""

    follows: str | None
    """The movable reference followed (alias, latest or stage), or None for a fixed one."""
    interval_s: float
    accept_schema_change: bool
    last_check_at: datetime | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    failed_version: str | None = None
    """A version that failed to load, warm or pass the contract check; not retried until the
    reference moves again or a reload is asked for."""
    schema_changes: list[str] = field(default_factory=list)
    """How the served model's input contract differs from the one before it, when a change was
    accepted."""


@dataclass
class ServiceState:
    """Shared by every route through app.state.service; set by the lifespan and the rollout.

    A route that predicts takes the predictor with `require_predictor()` right before it calls
    `predict`, with no `await` in between: a rollout may swap the predictor at any await, and the
    old one is drained only of the work queued on it.
    """

    settings: Settings
    metrics: Metrics
    predictor: Predictor | None = None
    draining: bool = False
    """Set on SIGTERM: /ready answers 503 while requests still in flight are served."""
    rollout: RolloutStatus | None = None
    """How the service follows the registry, once the model is served."""

    def serve(self, predictor: Predictor) -> None:
        """Make `predictor` the one requests use (one assignment: atomic on the event loop) and
        record in the metrics which model is served."""
        self.predictor = predictor
        loaded = predictor.loaded
        self.metrics.model_loaded(
            loaded.name,
            loaded.version,
            loaded.ref.alias,
            loaded.run_id,
            loaded.load_seconds,
            loaded.loaded_at,
        )

    def require_predictor(self) -> Predictor:
        """The serving predictor, or ModelNotReady while the model is loading."""
        if self.predictor is None:
            raise ModelNotReady("the model is still loading")
        return self.predictor

    def require_ready(self) -> Predictor:
        """The serving predictor, or ModelNotReady while loading or draining (for /ready)."""
        if self.draining:
            raise ModelNotReady("the service is shutting down")
        return self.require_predictor()
