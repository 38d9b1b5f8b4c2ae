"""The service's endpoints, in process, on a real sqlite registry holding the demo model."""

from __future__ import annotations

import dataclasses
import gc
import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.support import server_in_thread


def records(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/model/info").json()["input_example"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return dict(error)


# -- the happy path ---------------------------------------------------------------------------------


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_name": "ChurnPredictor", "model_version": "1"}


def test_the_collector_threshold_is_the_settings_while_the_model_is_served(settings: Settings) -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, *before[1:])
        with TestClient(create_app(settings.model_copy(update={"gc_threshold": 4321}))) as client:
            assert client.get("/ready").status_code == 200
            assert gc.get_threshold() == (4321, *before[1:])
        assert gc.get_threshold() == (700, *before[1:])  # as it was once the app stops
    finally:
        gc.set_threshold(*before)


def test_predict_records_match_the_model(client: TestClient, champion: LoadedModel) -> None:
    rows = records(client)
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    body = response.json()
    assert champion.input_example is not None
    assert body["predictions"] == champion.model.predict(champion.input_example).tolist()
    assert "probabilities" not in body
    assert body["model_name"] == "ChurnPredictor" and body["model_version"] == "1"
    assert body["request_id"] == response.headers["x-request-id"]


def test_predict_rows_in_signature_order_with_probabilities(
    client: TestClient, champion: LoadedModel
) -> None:
    info = client.get("/model/info").json()
    names = [c["name"] for c in info["inputs"]]
    rows = [[r[n] for n in names] for r in info["input_example"]]
    body = client.post("/predict", json={"features": rows, "return_probabilities": True}).json()
    assert champion.input_example is not None
    expected = champion.model.predict_proba(champion.input_example)
    assert len(body["probabilities"]) == len(rows)
    for got, want in zip(body["probabilities"], expected, strict=True):
        assert set(got) == {"0", "1"}
        assert np.allclose([got["0"], got["1"]], want)


def test_model_info(client: TestClient, champion: LoadedModel) -> None:
    info = client.get("/model/info").json()
    assert info["name"] == "ChurnPredictor" and info["version"] == "1" and info["alias"] == "champion"
    assert info["run_id"] == champion.run_id and info["flavor"] == "sklearn"
    assert info["estimator"].endswith("RandomForestClassifier)")
    assert info["classes"] == [0, 1] and info["probabilities"] is True
    assert [c["name"] for c in info["inputs"]][:2] == ["tenure_months", "monthly_charges"]
    contract = next(c for c in info["inputs"] if c["name"] == "contract")
    assert contract["categories"] == ["month-to-month", "one-year", "two-year"]
    assert info["load_seconds"] > 0 and info["loaded_at"]


def test_metrics_count_predictions(client: TestClient) -> None:
    client.post("/predict", json={"instances": records(client)})
    client.post("/predict", json={"instances": [{}]})
    text = client.get("/metrics").text
    assert 'predictions_total{model_name="ChurnPredictor",model_version="1",outcome="ok"} 1.0' in text
    assert 'predictions_total{model_name="ChurnPredictor",model_version="1",outcome="invalid"} 1.0' in text
    assert 'prediction_rows_total{model_name="ChurnPredictor",model_version="1",outcome="ok"} 3.0' in text
    assert "model_latency_seconds_bucket" in text
    assert 'http_requests_total{handler="/predict",method="POST",status="200"}' in text


def test_openapi_request_schema_is_the_models_signature(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    instance = doc["components"]["schemas"]["Instance"]
    assert instance["properties"]["contract"]["enum"] == ["month-to-month", "one-year", "two-year"]
    assert instance["properties"]["support_calls"]["type"] == "integer"
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["examples"]["instances"]["value"]["instances"] == records(client)
    assert {"413", "415", "422", "503"} <= set(doc["paths"]["/predict"]["post"]["responses"])


def test_docs_are_served_from_the_package(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    js = client.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000


# -- bad input ----------------------------------------------------------------------------------------


def test_wrong_feature_count(client: TestClient) -> None:
    error = assert_error(client.post("/predict", json={"features": [[1, 2, 3]]}), 422, "invalid_input")
    assert error["details"][0]["row"] == 0 and "expected 10 values" in error["details"][0]["message"]


def test_missing_and_unknown_features(client: TestClient) -> None:
    row = records(client)[0]
    del row["age"]
    row["favourite_colour"] = "red"
    error = assert_error(client.post("/predict", json={"instances": [row]}), 422, "invalid_input")
    assert {(d["field"], d["message"]) for d in error["details"]} == {
        ("age", "missing feature"),
        ("favourite_colour", "unknown feature"),
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenure_months", "12"),
        ("monthly_charges", [1]),
        ("contract", 1),
        ("age", None),
        ("tenure_months", 0.5),
    ],
)
def test_wrong_types(client: TestClient, field: str, value: Any) -> None:
    rows = records(client)
    rows[1][field] = value
    error = assert_error(client.post("/predict", json={"instances": rows}), 422, "invalid_input")
    assert error["details"] == [{"row": 1, "field": field, "message": error["details"][0]["message"]}]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals(client: TestClient, literal: str) -> None:
    row = records(client)[0]
    text = json.dumps({"instances": [row]}).replace(str(row["monthly_charges"]), literal)
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")


def test_overflowing_number_is_not_finite(client: TestClient) -> None:
    row = records(client)[0]
    text = json.dumps({"instances": [row]}).replace(str(row["monthly_charges"]), "1e999")
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")  # the parser reads 1e999 as infinity and refuses it


def test_unknown_category_is_refused_with_the_known_ones(client: TestClient) -> None:
    rows = records(client)
    rows[0]["contract"] = "weekly-secret-value"
    response = client.post("/predict", json={"instances": rows})
    error = assert_error(response, 422, "invalid_input")
    assert error["details"][0]["field"] == "contract" and "month-to-month" in error["details"][0]["message"]
    assert "weekly-secret-value" not in response.text, "the payload is never echoed"


def test_empty_batch(client: TestClient) -> None:
    assert_error(client.post("/predict", json={"instances": []}), 422, "invalid_input")
    assert_error(client.post("/predict", json={"features": []}), 422, "invalid_input")


def test_too_many_rows(registry: Any) -> None:
    settings = Settings(tracking_uri=registry.tracking_uri, max_rows=5)
    with TestClient(create_app(settings)) as client:
        rows = records(client) * 2
        assert_error(client.post("/predict", json={"instances": rows}), 413, "too_many_rows")
        assert client.post("/predict", json={"instances": rows[:5]}).status_code == 200


def test_body_over_the_limit_is_refused_by_length(registry: Any) -> None:
    settings = Settings(tracking_uri=registry.tracking_uri, max_body_bytes=4096)
    with TestClient(create_app(settings)) as client:
        body = json.dumps({"instances": records(client) * 40})
        assert len(body) > 4096
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert_error(response, 413, "payload_too_large")


def test_chunked_body_over_the_limit_is_refused(registry: Any) -> None:
    # How much of the body is read before the refusal is checked at the ASGI level in
    # tests/middleware/test_body_limit.py; the test client here sends the whole body first.
    settings = Settings(tracking_uri=registry.tracking_uri, max_body_bytes=4096)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert_error(response, 413, "payload_too_large")


def test_malformed_json(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b'{"instances": [', headers={"content-type": "application/json"}
    )
    error = assert_error(response, 400, "malformed_json")
    assert "line 1" in error["message"]
    assert_error(
        client.post("/predict", content=b"", headers={"content-type": "application/json"}),
        400,
        "malformed_json",
    )


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_wrong_content_type(client: TestClient, content_type: str) -> None:
    body = json.dumps({"instances": records(client)})
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    assert_error(response, 415, "unsupported_media_type")


def test_gzip_body_is_not_inflated(client: TestClient) -> None:
    bomb = gzip.compress(b" " * 10_000_000)
    response = client.post(
        "/predict", content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert_error(response, 415, "unsupported_media_type")


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


# -- model failures and the event loop ---------------------------------------------------------------


class Exploding:
    """A real model that raises on rows whose age is 99."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_

    def predict(self, frame: Any) -> Any:
        if (frame["age"] == 99).any():
            raise RuntimeError("secret internal detail /srv/model.py")
        return self.inner.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        return self.inner.predict_proba(frame)


def test_model_exception_is_a_500_with_request_id_and_the_server_goes_on(
    registry: Any, champion: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = dataclasses.replace(champion, model=Exploding(champion.model))
    settings = Settings(tracking_uri=registry.tracking_uri)
    with TestClient(create_app(settings, loader=lambda _: loaded)) as client:
        rows = records(client)
        rows[0]["age"] = 99
        response = client.post("/predict", json={"instances": rows}, headers={"X-Request-ID": "req-boom"})
        error = assert_error(response, 500, "prediction_failed")
        assert error["request_id"] == "req-boom"
        assert "secret" not in response.text and "RuntimeError" not in response.text
        assert "req-boom" in caplog.text and "secret internal detail" in caplog.text
        rows[0]["age"] = 40
        assert client.post("/predict", json={"instances": rows}).status_code == 200
        metrics = client.get("/metrics").text
        labels = 'model_name="ChurnPredictor",model_version="1",outcome="error"'
        assert f"predictions_total{{{labels}}} 1.0" in metrics
        assert f"prediction_rows_total{{{labels}}} {float(len(rows))}" in metrics


class Gated:
    """A real model whose predict waits until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.armed = False

    def predict(self, frame: Any) -> Any:
        if self.armed:
            self.entered.set()
            assert self.gate.wait(60)
        return self.inner.predict(frame)

    def predict_proba(self, frame: Any) -> Any:
        return self.inner.predict_proba(frame)


def test_slow_model_never_blocks_the_event_loop(registry: Any, champion: LoadedModel) -> None:
    gated = Gated(champion.model)
    loaded = dataclasses.replace(champion, model=gated)
    app = create_app(Settings(tracking_uri=registry.tracking_uri), loader=lambda _: loaded)
    with server_in_thread(app) as url:
        rows = httpx.get(f"{url}/model/info", timeout=10).json()["input_example"]
        gated.armed = True
        result: dict[str, Any] = {}

        def call() -> None:
            result["response"] = httpx.post(f"{url}/predict", json={"instances": rows}, timeout=60)

        caller = threading.Thread(target=call)
        caller.start()
        try:
            assert gated.entered.wait(10), "the prediction reached the model"
            # The model is stuck in its thread; the event loop must still answer.
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            assert httpx.get(f"{url}/ready", timeout=5).status_code == 200
            assert caller.is_alive() and "response" not in result
        finally:
            gated.gate.set()
            caller.join(30)
        assert result["response"].status_code == 200


def test_failed_load_raises_model_load_error(registry: Any) -> None:
    from model_api.errors import ModelLoadError

    settings = Settings(model_uri="models:/Missing@champion", tracking_uri=registry.tracking_uri)
    with pytest.raises(ModelLoadError, match="Missing"), TestClient(create_app(settings)):
        pass
