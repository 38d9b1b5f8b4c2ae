"""The guards in process: API keys, security headers, CORS, the body limit on every route, timeouts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr

from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.api.test_api import assert_error, records
from tests.support import Registry, server_in_thread

KEYS = "first-key-0123456789,second-key-abcdef"


@pytest.fixture
def secured(registry: Registry) -> Iterator[TestClient]:
    settings = Settings(tracking_uri=registry.tracking_uri, api_keys=SecretStr(KEYS))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


# -- API keys -------------------------------------------------------------------------------------------


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


def test_openapi_declares_both_schemes_on_protected_operations(secured: TestClient) -> None:
    doc = secured.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["BearerAuth"]["description"],
    }
    assert schemes["ApiKeyAuth"]["in"] == "header" and schemes["ApiKeyAuth"]["name"] == "X-API-Key"
    predict = doc["paths"]["/predict"]["post"]
    assert predict["security"] == [{"BearerAuth": []}, {"ApiKeyAuth": []}]
    assert "401" in predict["responses"]
    assert "security" in doc["paths"]["/model/info"]["get"]
    for open_path in ["/health", "/ready", "/metrics"]:
        assert "security" not in doc["paths"][open_path]["get"]


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


# -- headers, CORS ----------------------------------------------------------------------------------------


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_security_headers_on_every_kind_of_answer(secured: TestClient) -> None:
    answers = [
        secured.get("/health"),
        secured.get("/metrics"),
        secured.post("/predict", json={}),  # 401
        secured.post("/predict", json={}, headers={"X-API-Key": "second-key-abcdef"}),  # 422
        secured.get("/nope", headers={"X-API-Key": "second-key-abcdef"}),  # 404
        secured.post("/health"),  # 405
    ]
    for response in answers:
        assert_security_headers(response)
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["cache-control"] == "no-store"


def test_the_docs_page_may_run_only_its_own_script(client: TestClient) -> None:
    page = client.get("/docs")
    assert_security_headers(page)
    csp = page.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()
    assert "'unsafe-inline'" not in script_src and "'self'" in script_src
    assert len([s for s in script_src if s.startswith("'sha256-")]) == 1
    asset = client.get("/docs-assets/swagger-ui-bundle.js")
    assert "cache-control" not in asset.headers, "the docs' own assets may be cached"
    assert_security_headers(asset)


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


# -- the body limit, on every route ------------------------------------------------------------------------


def with_body_route(app: FastAPI) -> FastAPI:
    """The real app plus a route that reads its body its own way (not through read_json)."""

    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_api_route("/body-size", size, methods=["POST"])
    return app


def test_the_body_limit_holds_for_a_route_that_reads_its_own_body(registry: Registry) -> None:
    settings = Settings(tracking_uri=registry.tracking_uri, max_body_bytes=4096)
    with TestClient(with_body_route(create_app(settings))) as client:
        assert client.post("/body-size", content=b"x" * 4096).json() == {"size": 4096}
        assert_error(client.post("/body-size", content=b"x" * 4097), 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"x" * 1024

        assert_error(client.post("/body-size", content=chunks()), 413, "payload_too_large")


class Upload:
    """A client sending 10 MB in 1 KiB chunks straight to the ASGI app, counting what was read."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.read = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.read += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": self.read < 10_240}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def run(self, app: FastAPI) -> tuple[int, dict[str, Any]]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/body-size",
            "raw_path": b"/body-size",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *self.headers],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
            "state": {},
            "app": app,
        }
        asyncio.run(app(scope, self.receive, self.send))  # type: ignore[arg-type]
        return int(self.sent[0]["status"]), json.loads(self.sent[1]["body"])


def test_a_chunked_body_is_refused_at_the_chunk_that_crosses_the_limit() -> None:
    upload = Upload([(b"transfer-encoding", b"chunked")])
    status, body = upload.run(with_body_route(create_app(Settings(max_body_bytes=4096))))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert upload.read == 5, "4 KiB read, refused with the 5th; the rest of the 10 MB never read"


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    upload = Upload([(b"content-length", str(10 * 1024 * 1024).encode())])
    status, body = upload.run(with_body_route(create_app(Settings(max_body_bytes=4096))))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert upload.read == 0


# -- timeouts --------------------------------------------------------------------------------------------


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
