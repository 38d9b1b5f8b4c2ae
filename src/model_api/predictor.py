"""The loaded model behind a bounded thread pool: model work never runs on the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_api.admission import Ticket
from model_api.contract import Batch, InputSchema
from model_api.errors import ModelLoadError, PredictionFailed
from model_api.metrics import Metrics
from model_api.registry import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """What the model said for a batch: one label per row and, when asked, class probabilities
    (float64, [rows, classes] in the order of `Predictor.classes`), kept as an array until the
    protocol that renders them."""

    labels: list[Any]
    probabilities: np.ndarray | None = None

    def slice(self, start: int, stop: int) -> Prediction:
        probabilities = self.probabilities[start:stop] if self.probabilities is not None else None
        return Prediction(self.labels[start:stop], probabilities)


class Predictor:
    """Runs predictions for one loaded model on a bounded pool of model threads."""

    def __init__(self, loaded: LoadedModel, schema: InputSchema, *, threads: int, metrics: Metrics) -> None:
        self.loaded = loaded
        self.schema = schema
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        model = loaded.model
        self.classes: list[Any] = [
            c.item() if isinstance(c, np.generic) else c for c in getattr(model, "classes_", [])
        ]
        self.has_probabilities = (
            loaded.flavor == "sklearn" and hasattr(model, "predict_proba") and bool(self.classes)
        )
        self._latency = metrics.model_latency.labels(loaded.name, loaded.version or "")
        self._labels_from_proba = self.has_probabilities and _predicts_argmax_of_proba(model)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str | None:
        return self.loaded.version

    def predict_sync(self, batch: Batch, probabilities: bool) -> Prediction:
        """Run the model on one batch in the calling thread."""
        features = self.schema.to_model_input(batch)
        started = time.perf_counter()
        model = self.loaded.model
        try:
            if probabilities and self._labels_from_proba:
                # One pass instead of two: this model's predict is the argmax of predict_proba.
                proba = model.predict_proba(features)
                raw = np.asarray(model.classes_).take(np.argmax(proba, axis=1))
            else:
                raw = model.predict(features)
                proba = model.predict_proba(features) if probabilities else None
        except Exception as exc:
            raise PredictionFailed("the model failed on this request; quote the request id") from exc
        finally:
            self._latency.observe(time.perf_counter() - started)
        labels = _as_list(raw)
        if len(labels) != batch.n_rows:
            raise PredictionFailed("the model returned a different number of rows than it was given")
        return Prediction(labels, None if proba is None else np.asarray(proba, dtype=np.float64))

    async def predict(self, batch: Batch, probabilities: bool, *, ticket: Ticket | None = None) -> Prediction:
        """Run the model on a batch in a model thread, leaving the event loop free. With a `ticket`,
        a request whose deadline passed while it waited for a thread raises Expired uncomputed."""
        loop = asyncio.get_running_loop()
        if ticket is None:
            return await loop.run_in_executor(self._executor, self.predict_sync, batch, probabilities)
        return await loop.run_in_executor(self._executor, self._predict_in_turn, ticket, batch, probabilities)

    def _predict_in_turn(self, ticket: Ticket, batch: Batch, probabilities: bool) -> Prediction:
        if not ticket.start():
            raise ticket.expired_error()
        return self.predict_sync(batch, probabilities)

    def warm(self) -> None:
        """One prediction on the model's input example, so the first request pays no first-call cost."""
        example = [dict(r) for r in self.schema.example] or [self.schema.placeholder_row()]
        try:
            batch = self.schema.parse_records(example, max_rows=len(example))
            self.predict_sync(batch, self.has_probabilities)
        except Exception as exc:
            raise ModelLoadError(
                f"the model {self.name!r} version {self.version} failed its warm-up prediction on its input "
                f"example: {exc}; check that the example matches the signature"
            ) from exc

    async def drain(self) -> None:
        """Wait for queued work to be answered; a plain predictor queues nothing."""

    def close(self) -> None:
        """Let running predictions finish, then stop the model threads."""
        self._executor.shutdown(wait=True)


def _as_list(raw: Any) -> list[Any]:
    if hasattr(raw, "to_numpy"):  # pandas Series or DataFrame from a pyfunc model
        raw = raw.to_numpy()
    array = np.asarray(raw)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return list(array.tolist())


def _predicts_argmax_of_proba(model: Any) -> bool:
    """Whether `predict` is exactly classes_[argmax(predict_proba)] (trees and forests, single output)."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    kinds = (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)
    return isinstance(final, kinds) and getattr(final, "n_outputs_", 1) == 1
