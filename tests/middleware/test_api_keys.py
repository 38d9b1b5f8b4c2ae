"""API keys: where they come from, which paths they guard, how a request without one is refused,
that a setting never shows them; and CORS, which answers a preflight before keys are asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from model_api.main import create_app
from model_api.middleware.api_keys import ApiKeysError, is_open, load_api_keys
from model_api.settings import Settings
from tests.api.test_api import assert_error, records
from tests.support import Registry

KEYS = "first-key-0123456789,second-key-abcdef"


@pytest.fixture
def secured(registry: Registry) -> Iterator[TestClient]:
    settings = Settings(tracking_uri=registry.tracking_uri, api_keys=SecretStr(KEYS))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_no_keys_by_default() -> None:
    assert load_api_keys(Settings()) == []


def test_keys_from_the_variable_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# rotated 2026-11\nfile-key-1\n\n  file-key-2  # the old one, until Friday\n")
    monkeypatch.setenv("MODEL_API_API_KEYS", " env-key-1 ,env-key-2,")
    monkeypatch.setenv("MODEL_API_API_KEYS_FILE", str(secret))
    settings = Settings()
    assert load_api_keys(settings) == ["env-key-1", "env-key-2", "file-key-1", "file-key-2"]
    assert "env-key-1" not in repr(settings) and "env-key-1" not in str(settings.model_dump())


def test_a_missing_keys_file_names_the_file_and_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(ApiKeysError, match=r"MODEL_API_API_KEYS_FILE .*missing"):
        load_api_keys(Settings(api_keys_file=tmp_path / "missing"))


def test_keys_set_but_empty_refuse_to_start(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ApiKeysError, match="hold no key"):
        load_api_keys(Settings(api_keys_file=empty))
    with pytest.raises(ApiKeysError, match="hold no key"):
        load_api_keys(Settings(api_keys=SecretStr(" , ")))


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/docs-assets/swagger-ui-bundle.js",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/churn/ready",
        "/v2/models/churn/versions/3/ready",
        "/v1/models/churn",
    ],
)
def test_probes_scrapers_and_docs_are_open(path: str) -> None:
    assert is_open(path)


@pytest.mark.parametrize(
    "path",
    [
        "/predict",
        "/predict/",
        "/model/info",
        "/v1/models/churn:predict",
        "/v1/models",
        "/v2/models/churn",
        "/v2/models/churn/infer",
        "/v2/models/churn/versions/3/infer",
        "/v2/health/ready/../../models/churn/infer",
        "/admin/reload",
        "/health/../predict",
        "/docs-assetsX",
        "/",
        "/anything-added-later",
    ],
)
def test_everything_else_needs_a_key(path: str) -> None:
    assert not is_open(path)


# -- in the app ------------------------------------------------------------------------------------------


def test_keys_are_off_by_default(client: TestClient) -> None:
    assert client.post("/predict", json={"instances": records(client)}).status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json()["components"]


def test_predict_without_a_key_is_a_401_with_a_challenge(secured: TestClient) -> None:
    response = secured.post("/predict", json={"instances": [{}]}, headers={"X-Request-ID": "no-key"})
    error = assert_error(response, 401, "unauthorized")
    assert error["request_id"] == "no-key"
    assert response.headers["www-authenticate"] == 'Bearer realm="model-api"'


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer first-key-012345678"},  # a prefix of a key
        {"Authorization": "Basic Zmlyc3Qta2V5LTAxMjM0NTY3ODk="},
        {"Authorization": "first-key-0123456789"},
        {"X-API-Key": "first-key-0123456789x"},
        {"X-API-Key": "FIRST-KEY-0123456789"},
    ],
)
def test_a_wrong_key_is_a_401(secured: TestClient, headers: dict[str, str]) -> None:
    response = secured.post("/predict", json={"instances": [{}]}, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer first-key-0123456789"},
        {"Authorization": "bearer second-key-abcdef"},
        {"X-API-Key": "second-key-abcdef"},
    ],
)
def test_any_configured_key_in_either_header_is_accepted(
    secured: TestClient, headers: dict[str, str]
) -> None:
    rows = records_with_key(secured)
    response = secured.post("/predict", json={"instances": rows}, headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(rows)


def records_with_key(client: TestClient) -> list[dict[str, Any]]:
    info = client.get("/model/info", headers={"X-API-Key": "first-key-0123456789"})
    return list(info.json()["input_example"])


def test_probes_metrics_and_docs_stay_open_the_rest_is_closed(secured: TestClient) -> None:
    for path in ["/health", "/ready", "/metrics", "/docs", "/openapi.json", "/docs-assets/swagger-ui.css"]:
        assert secured.get(path).status_code == 200, path
    for path in ["/model/info", "/no-such-route", "/admin/reload"]:
        assert_error(secured.get(path), 401, "unauthorized")


def test_keys_never_reach_logs_or_metrics(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    rows = records_with_key(secured)
    secured.post("/predict", json={"instances": rows}, headers={"Authorization": "Bearer second-key-abcdef"})
    secured.post("/predict", json={"instances": rows}, headers={"X-API-Key": "guessed-key-42"})
    metrics = secured.get("/metrics").text
    assert 'status="200"' in metrics
    for secret in [*KEYS.split(","), "guessed-key-42"]:
        assert secret not in caplog.text and secret not in metrics


def test_the_protocol_routes_are_refused_in_their_own_error_shape(secured: TestClient) -> None:
    infer = "/v2/models/ChurnPredictor/infer"
    denied = secured.post(infer, json={"inputs": []})
    assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    assert isinstance(denied.json()["error"], str), "KServe clients parse {'error': '...'}"
    key = {"X-API-Key": "first-key-0123456789"}
    assert secured.get("/v2/models/ChurnPredictor").status_code == 401, "metadata needs a key"
    assert secured.get("/v2/models/ChurnPredictor", headers=key).status_code == 200
    for probe in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/ChurnPredictor/ready",
        "/v1/models/ChurnPredictor",
    ]:
        assert secured.get(probe).status_code == 200, probe
    gzipped = secured.post(
        "/v1/models/ChurnPredictor:predict",
        content=b"x",
        headers={**key, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert gzipped.status_code == 400 and "compressed" in gzipped.json()["error"]
    too_large = secured.post(
        infer, content=b" " * 2_000_000, headers={**key, "content-type": "application/json"}
    )
    assert too_large.status_code == 413 and isinstance(too_large.json()["error"], str)
    doc = secured.get("/openapi.json").json()
    assert doc["paths"]["/v2/models/{name}/infer"]["post"]["security"] == [
        {"BearerAuth": []},
        {"ApiKeyAuth": []},
    ]
    assert "security" not in doc["paths"]["/v2/health/ready"]["get"]


# -- CORS, answered before the keys ---------------------------------------------------------------------


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": "https://app.example.org"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/predict",
        headers={"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_configured_origins_even_before_keys(registry: Registry) -> None:
    settings = Settings(
        tracking_uri=registry.tracking_uri,
        api_keys=SecretStr(KEYS),
        cors_origins="https://app.example.org, https://admin.example.org",
    )
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/predict",
            headers={
                "Origin": "https://app.example.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        refused = client.get("/health", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in refused.headers
        unauthorized = client.post("/predict", json={}, headers={"Origin": "https://admin.example.org"})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["access-control-allow-origin"] == "https://admin.example.org"
        assert "x-request-id" in unauthorized.headers["access-control-expose-headers"].lower()
