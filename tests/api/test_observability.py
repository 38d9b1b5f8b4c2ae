"""Metrics, access logs and request ids of the service, in process on the real demo registry."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model_api.logs import JsonFormatter
from model_api.main import create_app
from model_api.metrics import Metrics
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.api.test_api import Gated, records
from tests.support import server_in_thread


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "model_api.access"]


def test_model_info_load_and_readiness(client: TestClient, champion: LoadedModel) -> None:
    text = client.get("/metrics").text
    model = {"model_name": "ChurnPredictor", "model_version": "1"}
    info = {**model, "alias": "champion", "run_id": str(champion.run_id)}
    assert value(text, "model_info", **info) == 1.0
    assert value(text, "model_ready") == 1.0
    assert value(text, "model_load_duration_seconds", **model) > 0
    assert value(text, "model_last_load_timestamp_seconds", **model) > 1.7e9


def test_errors_are_counted_by_code(client: TestClient) -> None:
    client.post("/predict", json={"instances": [{}]})
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    client.get("/no/such/route")
    text = client.get("/metrics").text
    assert value(text, "errors_total", code="invalid_input") == 1.0
    assert value(text, "errors_total", code="malformed_json") == 2.0
    assert value(text, "errors_total", code="not_found") == 1.0


def test_labels_are_route_templates_never_paths_or_ids(client: TestClient) -> None:
    client.get("/no/such/route/4711", headers={"X-Request-ID": "rid-never-a-label"})
    client.get("/docs-assets/swagger-ui.css")
    text = client.get("/metrics").text
    assert "4711" not in text and "rid-never-a-label" not in text and "swagger-ui.css" not in text
    handlers = {dict(labels).get("handler") for (_, labels) in samples(text)} - {None}
    assert handlers <= {"/predict", "/health", "/ready", "/model/info", "/metrics", "/docs-assets", "none"}
    assert "/docs-assets" in handlers and "none" in handlers


def test_one_access_line_per_request_without_the_payload(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    rows = records(client)
    rows[0]["contract"] = "secret-weekly-plan"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        bad = client.post("/predict", json={"instances": rows}, headers={"X-Request-ID": "req-42"})
        good = client.get("/health")
    assert bad.status_code == 422
    first, second = access_records(caplog)
    assert (first.method, first.route, first.status, first.request_id) == ("POST", "/predict", 422, "req-42")  # type: ignore[attr-defined]
    assert first.error_code == "invalid_input" and first.duration_ms > 0  # type: ignore[attr-defined]
    assert (second.route, second.status) == ("/health", 200)  # type: ignore[attr-defined]
    assert second.request_id == good.headers["x-request-id"]  # type: ignore[attr-defined]
    assert "secret-weekly-plan" not in caplog.text


def test_json_lines_carry_the_access_fields() -> None:
    record = logging.LogRecord("model_api.access", logging.INFO, __file__, 1, "POST %s", ("/predict",), None)
    for key, val in {"request_id": "r1", "method": "POST", "route": "/predict", "status": 200}.items():
        setattr(record, key, val)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "POST /predict" and line["level"] == "INFO"
    assert line["logger"] == "model_api.access" and line["time"].endswith("+00:00")
    assert {k: line[k] for k in ("request_id", "method", "route", "status")} == {
        "request_id": "r1",
        "method": "POST",
        "route": "/predict",
        "status": 200,
    }


def test_observe_batch_fills_the_batch_and_queue_histograms() -> None:
    metrics = Metrics()
    metrics.observe_batch("M", "3", rows=5, queue_wait_s=0.002)
    metrics.observe_batch("M", "3", rows=40, queue_wait_s=0.020)
    text = metrics.render().decode()
    labels = {"model_name": "M", "model_version": "3"}
    assert value(text, "model_batch_size_count", **labels) == 2
    assert value(text, "model_batch_size_sum", **labels) == 45
    assert value(text, "model_batch_size_bucket", **labels, le="8.0") == 1
    assert value(text, "queue_wait_seconds_bucket", **labels, le="0.0025") == 1


def test_requests_in_progress_by_route(registry: Any, champion: LoadedModel) -> None:
    gated = Gated(champion.model)
    app = create_app(
        Settings(tracking_uri=registry.tracking_uri),
        loader=lambda _: dataclasses.replace(champion, model=gated),
    )
    with server_in_thread(app) as url:
        rows = httpx.get(f"{url}/model/info", timeout=10).json()["input_example"]
        gated.armed = True
        caller = threading.Thread(
            target=lambda: httpx.post(f"{url}/predict", json={"instances": rows}, timeout=60)
        )
        caller.start()
        try:
            assert gated.entered.wait(10)
            during = httpx.get(f"{url}/metrics", timeout=5).text
        finally:
            gated.gate.set()
            caller.join(30)
        after = httpx.get(f"{url}/metrics", timeout=5).text
    assert value(during, "http_requests_inprogress", handler="/predict", method="POST") == 1.0
    assert value(after, "http_requests_inprogress", handler="/predict", method="POST") == 0.0
    assert value(after, "model_ready") == 1.0
