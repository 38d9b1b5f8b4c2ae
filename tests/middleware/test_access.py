"""The metrics and access layer: HTTP metrics by route template, errors by code, one access line."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from model_api.logs import JsonFormatter, logging_config
from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.api.test_api import Gated, records
from tests.support import Registry, metric_samples, metric_value, server_in_thread

KEY = "access-key-0123456789"


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "model_api.access"]


def test_errors_are_counted_by_code(client: TestClient) -> None:
    client.post("/predict", json={"instances": [{}]})
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    client.get("/no/such/route")
    text = client.get("/metrics").text
    assert metric_value(text, "errors_total", code="invalid_input") == 1.0
    assert metric_value(text, "errors_total", code="malformed_json") == 2.0
    assert metric_value(text, "errors_total", code="not_found") == 1.0


def test_guard_refusals_are_counted_like_any_answer(registry: Registry) -> None:
    """The metrics layer sits outside the guards: a 401, a 413 refused on its declared length and a
    415 each show in errors_total and http_requests_total (before 8bf17ce they were in neither)."""
    settings = Settings(tracking_uri=registry.tracking_uri, api_keys=SecretStr(KEY), max_body_bytes=4096)
    key = {"X-API-Key": KEY}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answers = [
            client.post("/predict", json={"instances": [{}]}),
            client.post(
                "/predict",
                content=b"{" + b" " * 5000 + b"}",
                headers={**key, "content-type": "application/json"},
            ),
            client.post("/predict", content=b"{}", headers={**key, "content-type": "text/plain"}),
        ]
        assert [a.status_code for a in answers] == [401, 413, 415]
        text = client.get("/metrics").text
    for status, code in [
        ("401", "unauthorized"),
        ("413", "payload_too_large"),
        ("415", "unsupported_media_type"),
    ]:
        assert metric_value(text, "errors_total", code=code) == 1.0, code
        assert (
            metric_value(text, "http_requests_total", handler="/predict", method="POST", status=status) == 1.0
        )


def test_protocol_errors_are_counted_by_code(client: TestClient) -> None:
    """A V1 and a V2 400 each count in errors_total (before 8bf17ce neither did)."""
    v1 = client.post("/v1/models/ChurnPredictor:predict", json={"instances": []})
    v2 = client.post("/v2/models/ChurnPredictor/infer", json={"inputs": [], "extra": 1})
    assert (v1.status_code, v2.status_code) == (400, 400)
    text = client.get("/metrics").text
    counted = {
        dict(labels)["code"]: count
        for (name, labels), count in metric_samples(text).items()
        if name == "errors_total"
    }
    assert counted == {"invalid_input": 1.0, "bad_request": 1.0}, counted
    for handler in ["/v1/models/{name}:predict", "/v2/models/{name}/infer"]:
        assert metric_value(text, "http_requests_total", handler=handler, method="POST", status="400") == 1.0


def test_labels_are_route_templates_never_paths_or_ids(client: TestClient) -> None:
    client.get("/no/such/route/4711", headers={"X-Request-ID": "rid-never-a-label"})
    client.get("/docs-assets/swagger-ui.css")
    text = client.get("/metrics").text
    # The id is looked for in the labels (and the path in the whole page), not in the values: a
    # duration such as 0.004711837 holds the digits 4711.
    values = {value for (_, labels) in metric_samples(text) for (_, value) in labels}
    assert not [value for value in values if "4711" in value]
    assert "/no/such/route" not in text and "rid-never-a-label" not in text and "swagger-ui.css" not in text
    handlers = {dict(labels).get("handler") for (_, labels) in metric_samples(text)} - {None}
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


# Times whose milliseconds a truncation of the fraction gets wrong (datetime first rounds to the
# microsecond), a fraction that rounds up into the next second, a plain one, and before 1970.
EDGE_TIMES = (25_353_909.980999846, 56_309_338.08299998, 1e9 + 0.9999996, 1_700_000_000.0005, 1.7e9 + 0.25)
BEFORE_1970 = (-0.5, -1.25, -86_400.0004)


def test_json_time_is_what_datetime_gives_to_the_millisecond() -> None:
    formatter = JsonFormatter()
    for created in (*EDGE_TIMES, *BEFORE_1970, *(1_800_000_000 + k / 997 for k in range(3000))):
        record = logging.LogRecord("model_api.access", logging.INFO, __file__, 1, "x", None, None)
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["time"] == expected, created


def startup_filter() -> logging.Filter:
    config = logging_config()["filters"]["startup"]
    made: logging.Filter = config["()"]()
    return made


def test_the_startup_filter_drops_the_reported_traceback_and_leaves_other_records_unformatted() -> None:
    drop = startup_filter()
    traceback = "Traceback (most recent call last):\n  model_api.errors.ModelLoadError: no model"
    for message, kept in ((traceback, False), ("Traceback: another error", True)):
        record = logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, message, None, None)
        assert drop.filter(record) is kept
    # An access line passes without its message being built (these args would not format).
    info = logging.LogRecord("model_api.access", logging.INFO, "", 0, "%d", ("not a number",), None)
    assert drop.filter(info)


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
    assert metric_value(during, "http_requests_inprogress", handler="/predict", method="POST") == 1.0
    assert metric_value(after, "http_requests_inprogress", handler="/predict", method="POST") == 0.0
    assert metric_value(after, "model_ready") == 1.0


def test_a_path_is_labelled_by_the_route_its_method_matches(client: TestClient) -> None:
    """A GET on a V1 :predict path matches /v1/models/{name}; a POST on it is a prediction, however
    the first request on that path came (the route templates are remembered by path and method)."""
    path = "/v1/models/ChurnPredictor:predict"
    client.get(path)
    client.post(path, json={"instances": []})
    text = client.get("/metrics").text
    assert (
        metric_value(
            text, "http_requests_total", handler="/v1/models/{name}:predict", method="POST", status="400"
        )
        == 1.0
    )
