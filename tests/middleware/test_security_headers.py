"""Security headers on every answer, and the docs page's own script policy."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from model_api.main import create_app
from model_api.settings import Settings
from tests.support import Registry

KEY = "headers-key-0123456789"


@pytest.fixture
def secured(registry: Registry) -> Iterator[TestClient]:
    settings = Settings(tracking_uri=registry.tracking_uri, api_keys=SecretStr(KEY))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


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
        secured.post("/predict", json={}, headers={"X-API-Key": KEY}),  # 422
        secured.get("/nope", headers={"X-API-Key": KEY}),  # 404
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
