"""Request ids: a sane X-Request-ID is echoed, anything else replaced, and every answer carries one."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_client_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    hostile = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


def test_a_generated_id_is_fresh_per_request_and_quoted_in_errors(client: TestClient) -> None:
    ids = {client.get("/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5 and all(len(i) == 32 for i in ids)
    refused = client.get("/no/such/route", headers={"X-Request-ID": "x" * 129})  # too long: replaced
    rid = refused.headers["x-request-id"]
    assert rid != "x" * 129 and refused.json()["error"]["request_id"] == rid


def test_the_id_reaches_the_prediction_and_the_protocols(client: TestClient) -> None:
    rows = client.get("/model/info").json()["input_example"]
    answer = client.post("/predict", json={"instances": rows}, headers={"X-Request-ID": "p-1"})
    assert answer.headers["x-request-id"] == "p-1" and answer.json()["request_id"] == "p-1"
    v1 = client.post(
        "/v1/models/ChurnPredictor:predict", json={"instances": rows}, headers={"X-Request-ID": "v1.a:b"}
    )
    assert v1.status_code == 200 and v1.headers["x-request-id"] == "v1.a:b"
