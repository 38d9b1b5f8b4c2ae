"""The data plane: admission (503 loading, 404 not served), one inference counted by outcome, a
version-pinned request after a swap, draining, and the request timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from model_api.dataplane import DataPlane, InferenceRequest
from model_api.errors import InvalidInput, ModelNotReady, NotFound, PredictionFailed
from model_api.main import create_app
from model_api.metrics import Metrics
from model_api.predictor import Predictor
from model_api.registry import LoadedModel
from model_api.rows import Records
from model_api.settings import Settings
from model_api.signature import model_spec
from tests.api.test_api import assert_error
from tests.support import Registry, metric_value, server_in_thread


class Exploding:
    """A real model that raises on every predict."""

    def __init__(self, inner: Any) -> None:
        self.classes_ = inner.classes_

    def predict(self, frame: Any) -> Any:
        raise RuntimeError("boom")


def make_predictor(loaded: LoadedModel, metrics: Metrics, **changes: Any) -> Predictor:
    loaded = dataclasses.replace(loaded, **changes)
    return Predictor(loaded, model_spec(loaded), threads=1, metrics=metrics)


@pytest.fixture
def plane() -> DataPlane:
    return DataPlane(Settings(), Metrics())


@pytest.fixture
def served(plane: DataPlane, champion: LoadedModel) -> Iterator[Predictor]:
    predictor = make_predictor(champion, plane.metrics)
    plane.serve(predictor)
    yield predictor
    predictor.close()


def example(champion: LoadedModel) -> list[dict[str, Any]]:
    assert champion.input_example is not None
    return [dict(r) for r in champion.input_example.to_dict(orient="records")]


def counts(plane: DataPlane, outcome: str) -> float:
    return metric_value(
        plane.metrics.render().decode(),
        "predictions_total",
        model_name="ChurnPredictor",
        model_version="1",
        outcome=outcome,
    )


def test_nothing_is_admitted_while_loading(plane: DataPlane) -> None:
    with pytest.raises(ModelNotReady, match="loading"):
        plane.admit()
    with pytest.raises(ModelNotReady):
        plane.ready()


def test_lookup_is_by_name_and_version(plane: DataPlane, served: Predictor) -> None:
    assert plane.lookup() is served and plane.lookup("ChurnPredictor", "1") is served
    with pytest.raises(NotFound, match="'Other' is not served here; this server serves 'ChurnPredictor'"):
        plane.admit("Other")
    with pytest.raises(NotFound, match="the served version is 1"):
        plane.admit("ChurnPredictor", "2")
    with pytest.raises(NotFound) as err:
        plane.lookup("x" * 1000)
    assert "x" * 65 not in err.value.message, "a client's name is not repeated in full"


def test_infer_counts_ok_invalid_and_error(
    plane: DataPlane, served: Predictor, champion: LoadedModel
) -> None:
    rows = example(champion)

    async def infer(records: list[dict[str, Any]], plane: DataPlane = plane) -> Any:
        with plane.admit() as admission:
            return await plane.infer(admission, InferenceRequest(Records(records)))

    result = asyncio.run(infer(rows))
    assert result.predictor is served and result.n_rows == len(rows)
    assert result.prediction.labels == champion.model.predict(champion.input_example).tolist()
    with pytest.raises(InvalidInput):
        asyncio.run(infer([{"age": "x"}]))
    assert (counts(plane, "ok"), counts(plane, "invalid"), counts(plane, "error")) == (1, 1, 0)

    broken = DataPlane(Settings(), Metrics())
    exploding = make_predictor(champion, broken.metrics, model=Exploding(champion.model))
    broken.serve(exploding)
    try:
        with pytest.raises(PredictionFailed):
            asyncio.run(infer(rows, broken))
    finally:
        exploding.close()
    assert (counts(broken, "ok"), counts(broken, "error")) == (0, 1)
    text = broken.metrics.render().decode()
    labels = {"model_name": "ChurnPredictor", "model_version": "1"}
    assert metric_value(text, "prediction_rows_total", **labels, outcome="error") == len(rows)


def test_probabilities_asked_of_a_model_without_them_are_invalid(
    plane: DataPlane, champion: LoadedModel
) -> None:
    plain = make_predictor(champion, plane.metrics, flavor="python_function")
    plane.serve(plain)
    request = InferenceRequest(Records(example(champion)), return_probabilities=True, probabilities_field="x")

    async def infer() -> Any:
        with plane.admit() as admission:
            return await plane.infer(admission, request)

    try:
        with pytest.raises(InvalidInput) as err:
            asyncio.run(infer())
    finally:
        plain.close()
    assert err.value.details[0].field == "x"


def test_a_version_pinned_request_404s_after_a_swap(
    plane: DataPlane, served: Predictor, champion: LoadedModel
) -> None:
    """A request admitted for version 1 whose body is read while version 2 is swapped in is not
    answered by version 2; one that named no version is."""
    pinned = plane.admit("ChurnPredictor", "1")
    unpinned = plane.admit("ChurnPredictor")
    newer = make_predictor(champion, plane.metrics, version="2")
    plane.serve(newer)
    request = InferenceRequest(Records(example(champion)))
    try:
        with pytest.raises(NotFound, match="the served version is 2"):
            asyncio.run(plane.infer(pinned, request))
        result = asyncio.run(plane.infer(unpinned, request))
    finally:
        newer.close()
    assert result.predictor is newer and unpinned.predictor is newer


def test_draining_fails_readiness_but_serves(
    plane: DataPlane, served: Predictor, champion: LoadedModel
) -> None:
    assert plane.ready() is served
    plane.start_draining()
    with pytest.raises(ModelNotReady, match="shutting down"):
        plane.ready()
    assert metric_value(plane.metrics.render().decode(), "model_ready") == 0.0
    with plane.admit() as admission:  # requests still arriving are served
        result = asyncio.run(plane.infer(admission, InferenceRequest(Records(example(champion)))))
    assert result.n_rows == len(example(champion))


# -- the request timeout, on a real server --------------------------------------------------------------


class Hanging:
    """A real model whose predict, once armed, blocks until the test releases it; counts its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_
        self.armed = False
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def predict(self, frame: Any) -> Any:
        if self.armed:
            self.calls += 1
            self.entered.set()
            assert self.release.wait(60)
        return self.inner.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        return self.inner.predict_proba(frame)


@pytest.mark.parametrize("batching", [True, False])
def test_a_hung_model_times_out_with_504_and_the_server_stays_healthy(
    registry: Registry, champion: LoadedModel, batching: bool, caplog: pytest.LogCaptureFixture
) -> None:
    model = Hanging(champion.model)
    loaded = dataclasses.replace(champion, model=model)
    settings = Settings(tracking_uri=registry.tracking_uri, request_timeout_s=0.5, batching=batching)
    app = create_app(settings, loader=lambda _: loaded)
    with server_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        rows = client.get("/model/info").json()["input_example"]
        model.armed = True
        try:
            stuck = client.post("/predict", json={"instances": rows}, headers={"X-Request-ID": "hung-1"})
            error = assert_error(stuck, 504, "timeout")
            assert error["request_id"] == "hung-1"
            assert model.entered.is_set() and model.calls == 1
            # The model thread is still stuck; a second request queues behind it and times out too.
            queued = client.post("/predict", json={"instances": rows}, headers={"X-Request-ID": "hung-2"})
            assert_error(queued, 504, "timeout")
            v1 = client.post("/v1/models/ChurnPredictor:predict", json={"instances": rows})
            assert v1.status_code == 504 and "timeout" in v1.json()["error"], "the protocols time out too"
            assert client.get("/health").status_code == 200
            assert client.get("/ready").status_code == 200
        finally:
            model.release.set()
        model.armed = False
        after = client.post("/predict", json={"instances": rows})
        assert after.status_code == 200, after.text
        assert after.json()["predictions"] == champion.model.predict(champion.input_example).tolist()
        assert model.calls == 1, "the timed-out queued request was never computed"
    assert "hung-1" in caplog.text and "timeout" in caplog.text
