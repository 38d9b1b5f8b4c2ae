"""One counted prediction, shared by every protocol: validate, predict, and record the outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from model_api.errors import ServingError
from model_api.predictor import Prediction, Predictor
from model_api.schemas import Batch
from model_api.state import ServiceState
from model_api.timeouts import predict_within


class Parsed(Protocol):
    """A validated request: its rows, and whether class probabilities are asked for."""

    @property
    def batch(self) -> Batch: ...

    @property
    def return_probabilities(self) -> bool: ...


P = TypeVar("P", bound=Parsed)


async def predict_counted(
    state: ServiceState, predictor: Predictor, parse: Callable[[], P]
) -> tuple[P, Prediction]:
    """Validate with `parse`, then predict, counting the request as invalid, error or ok."""
    labels = predictor.name, predictor.version or ""
    try:
        parsed = parse()
    except ServingError:
        state.metrics.predictions.labels(*labels, "invalid").inc()
        raise
    try:
        result = await predict_within(
            predictor, parsed.batch, parsed.return_probabilities, state.settings.request_timeout_s
        )
    except ServingError:
        state.metrics.predictions.labels(*labels, "error").inc()
        state.metrics.rows.labels(*labels, "error").inc(parsed.batch.n_rows)
        raise
    state.metrics.predictions.labels(*labels, "ok").inc()
    state.metrics.rows.labels(*labels, "ok").inc(parsed.batch.n_rows)
    return parsed, result
