"""What the running service knows about itself: its settings, metrics, and the model it serves."""

from __future__ import annotations

from dataclasses import dataclass

from model_api.errors import ModelNotReady
from model_api.metrics import Metrics
from model_api.predictor import Predictor
from model_api.settings import Settings


@dataclass
class ServiceState:
    """Shared by every route through app.state.service; set by the lifespan."""

    settings: Settings
    metrics: Metrics
    predictor: Predictor | None = None
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.predictor is not None and not self.draining

    def require_predictor(self) -> Predictor:
        """The serving predictor, or ModelNotReady while loading or draining."""
        if self.draining:
            raise ModelNotReady("the service is shutting down")
        if self.predictor is None:
            raise ModelNotReady("the model is still loading")
        return self.predictor
