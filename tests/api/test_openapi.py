"""The OpenAPI document: the request schema derived from the model's contract, and its security."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from model_api.api.openapi import predict_examples, predict_schemas
from model_api.contract import InputSchema
from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from model_api.signature import build_input_schema
from tests.support import Registry


@pytest.fixture(scope="module")
def schema(champion: LoadedModel) -> InputSchema:
    return build_input_schema(champion.model, champion.signature, champion.input_example)


@pytest.fixture
def secured(registry: Registry) -> Iterator[TestClient]:
    settings = Settings(tracking_uri=registry.tracking_uri, api_keys=SecretStr("openapi-key-0123456789"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_openapi_schema_lists_features_types_and_categories(schema: InputSchema) -> None:
    components = predict_schemas(schema, max_rows=50)
    instance = components["Instance"]
    assert instance["required"] == list(schema.names)
    assert instance["properties"]["contract"]["enum"] == ["month-to-month", "one-year", "two-year"]
    assert instance["properties"]["tenure_months"]["type"] == "integer"
    assert components["PredictRequest"]["properties"]["instances"]["maxItems"] == 50
    assert predict_examples(schema)["instances"]["value"]["instances"][0] == schema.example[0]


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


def test_the_document_has_no_security_without_keys(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "securitySchemes" not in doc["components"]
    assert "security" not in doc["paths"]["/predict"]["post"]
