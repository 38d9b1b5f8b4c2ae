"""The innermost layer: an exception no route expected is a 500 inside every layer of ours."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.api.test_api import assert_error
from tests.support import Registry, metric_value


def test_an_unexpected_exception_is_a_500_with_our_headers(
    registry: Registry, champion: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(tracking_uri=registry.tracking_uri), loader=lambda _: champion)

    async def broken() -> None:
        raise RuntimeError("the secret cause")

    app.add_api_route("/broken", broken, methods=["GET"])
    with TestClient(app, raise_server_exceptions=False) as client:
        caplog.set_level(logging.INFO)
        response = client.get("/broken", headers={"X-Request-ID": "boom-1"})
        error = assert_error(response, 500, "internal_error")
        assert error["request_id"] == "boom-1" and response.headers["x-request-id"] == "boom-1"
        assert response.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "the secret cause" not in response.text
        text = client.get("/metrics").text
    assert metric_value(text, "errors_total", code="internal_error") == 1.0
    assert metric_value(text, "http_requests_total", handler="/broken", method="GET", status="500") == 1.0
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged and logged[0].exc_info is not None, "the cause is logged with its traceback"
    assert "boom-1" in logged[0].getMessage()


def test_with_cors_an_unexpected_500_carries_the_cors_headers(
    registry: Registry, champion: LoadedModel
) -> None:
    """The edge renders a 500 outside CORS; with CORS on, it is rendered inside, so a browser can
    read the request id in it (before this test the /predict 500 had no Allow-Origin header)."""
    origin = "https://ui.example.org"
    app = create_app(
        Settings(tracking_uri=registry.tracking_uri, cors_origins=origin), loader=lambda _: champion
    )

    async def broken() -> None:
        raise RuntimeError("the secret cause")

    app.add_api_route("/broken", broken, methods=["GET"])
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken", headers={"Origin": origin, "X-Request-ID": "cors-1"})
        error = assert_error(response, 500, "internal_error")
        assert response.headers["access-control-allow-origin"] == origin
        assert error["request_id"] == "cors-1" and response.headers["x-request-id"] == "cors-1"
        assert response.headers["x-frame-options"] == "DENY"
        text = client.get("/metrics").text
    assert metric_value(text, "errors_total", code="internal_error") == 1.0
    assert metric_value(text, "http_requests_total", handler="/broken", method="GET", status="500") == 1.0
