"""The predictor: the loaded model behind a bounded pool of model threads."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from model_api.contract import Batch
from model_api.errors import PredictionFailed
from model_api.metrics import Metrics
from model_api.predictor import Prediction, Predictor
from model_api.registry import LoadedModel
from model_api.signature import model_spec
from tests.support import metric_value


class Shortchanging:
    """A real model that drops the last row of every answer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_

    def predict(self, frame: Any) -> Any:
        return self.inner.predict(frame)[:-1]


def predictor_of(champion: LoadedModel, metrics: Metrics | None = None, **changes: Any) -> Predictor:
    loaded = dataclasses.replace(champion, **changes)
    return Predictor(loaded, model_spec(champion), threads=1, metrics=metrics or Metrics())


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def predictor(champion: LoadedModel, metrics: Metrics) -> Iterator[Predictor]:
    p = predictor_of(champion, metrics)
    yield p
    p.close()


def batch_of(predictor: Predictor) -> Batch:
    return predictor.schema.parse_records([dict(r) for r in predictor.schema.example], 100)


def test_labels_and_probabilities_match_the_model(predictor: Predictor, champion: LoadedModel) -> None:
    assert predictor.name == "ChurnPredictor" and predictor.version == "1"
    assert predictor.classes == [0, 1] and predictor.has_probabilities
    result = asyncio.run(predictor.predict(batch_of(predictor), True))
    assert result.labels == champion.model.predict(champion.input_example).tolist()
    assert all(type(label) is int for label in result.labels), "plain Python values, not numpy's"
    assert isinstance(result.probabilities, np.ndarray) and result.probabilities.dtype == np.float64
    assert np.allclose(result.probabilities, champion.model.predict_proba(champion.input_example))
    assert asyncio.run(predictor.predict(batch_of(predictor), False)).probabilities is None


def test_a_prediction_slices_labels_and_probabilities_together() -> None:
    p = Prediction([0, 1, 1], np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]))
    part = p.slice(1, 3)
    assert part.labels == [1, 1] and part.probabilities is not None
    assert part.probabilities.tolist() == [[0.2, 0.8], [0.4, 0.6]]
    assert Prediction([0, 1]).slice(0, 1) == Prediction([0])


def test_model_latency_is_observed(predictor: Predictor, metrics: Metrics) -> None:
    predictor.predict_sync(batch_of(predictor), False)
    text = metrics.render().decode()
    count = metric_value(text, "model_latency_seconds_count", model_name="ChurnPredictor", model_version="1")
    assert count == 1.0


def test_a_model_answering_too_few_rows_fails_the_request(champion: LoadedModel) -> None:
    p = predictor_of(champion, model=Shortchanging(champion.model))
    try:
        with pytest.raises(PredictionFailed, match="different number of rows"):
            p.predict_sync(batch_of(p), False)
        unwarmed = p.warm()  # a model that fails its warm-up starts unwarmed, saying why
        assert unwarmed is not None and "warm-up prediction failed" in unwarmed
    finally:
        p.close()


def test_warm_runs_the_input_example_once(predictor: Predictor, metrics: Metrics) -> None:
    predictor.warm()
    text = metrics.render().decode()
    assert (
        metric_value(text, "model_latency_seconds_count", model_name="ChurnPredictor", model_version="1") == 1
    )
