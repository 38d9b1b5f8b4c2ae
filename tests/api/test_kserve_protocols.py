"""The KServe V1 and Open Inference (V2) routes, in process, on the real demo model."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings

MODEL = "/v2/models/ChurnPredictor"
DATATYPE = {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "string": "BYTES"}


def assert_protocol_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in body["error"]
    return str(body["error"])


def column_inputs(client: TestClient, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One input per feature, as a pd-content-type client sends a DataFrame."""
    meta = client.get(MODEL).json()
    return [
        {
            "name": i["name"],
            "datatype": i["datatype"],
            "shape": [len(rows)],
            "data": [r[i["name"]] for r in rows],
        }
        for i in meta["inputs"]
    ]


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json()["name"] == "model-api"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"{MODEL}/ready").json() == {"name": "ChurnPredictor", "ready": True}
    assert client.get(f"{MODEL}/versions/1/ready").status_code == 200


def test_model_metadata_comes_from_the_signature(client: TestClient, champion: LoadedModel) -> None:
    meta = client.get(MODEL).json()
    assert client.get(f"{MODEL}/versions/1").json() == meta
    assert meta["name"] == "ChurnPredictor" and meta["versions"] == ["1"]
    signature = champion.signature.inputs.inputs
    assert [i["name"] for i in meta["inputs"]] == [s.name for s in signature]
    assert [i["datatype"] for i in meta["inputs"]] == [DATATYPE[s.type.name] for s in signature]
    assert all(i["shape"] == [-1] for i in meta["inputs"])
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    assert_protocol_error(client.get("/v2/models/Other"), 404, "'Other'", "ChurnPredictor")
    assert_protocol_error(client.get("/v2/models/Other/ready"), 404)
    assert_protocol_error(client.get(f"{MODEL}/versions/2"), 404, "version '2'", "served version is 1")
    assert_protocol_error(client.post(f"{MODEL}/versions/2/infer", json={"inputs": []}), 404)
    assert_protocol_error(client.post("/v2/models/Other/infer", json={"inputs": []}), 404)
    assert_protocol_error(client.get("/v1/models/Other"), 404)
    assert_protocol_error(client.post("/v1/models/Other:predict", json={"instances": [[1]]}), 404)


def test_infer_by_columns_matches_the_model(
    client: TestClient, champion: LoadedModel, example_rows: list[dict[str, Any]]
) -> None:
    body = {
        "id": "req-7",
        "inputs": column_inputs(client, example_rows),
        "parameters": {"content_type": "pd"},
    }
    answer = client.post(f"{MODEL}/versions/1/infer", json=body).json()
    assert answer["id"] == "req-7"
    assert answer["model_name"] == "ChurnPredictor" and answer["model_version"] == "1"
    (predict,) = answer["outputs"]
    assert predict["name"] == "predict" and predict["shape"] == [len(example_rows)]
    assert predict["data"] == champion.model.predict(champion.input_example).tolist()


def test_infer_columns_shaped_n_by_1_with_probabilities(
    client: TestClient, champion: LoadedModel, example_rows: list[dict[str, Any]]
) -> None:
    inputs = column_inputs(client, example_rows)
    for i in inputs:
        i["shape"] = [len(example_rows), 1]
        i["data"] = [[v] for v in i["data"]]
    body = {"inputs": inputs, "outputs": [{"name": "predict_proba"}, {"name": "predict"}]}
    response = client.post(f"{MODEL}/infer", headers={"X-Request-ID": "rid-1"}, json=body)
    answer = response.json()
    assert answer["id"] == "rid-1"  # no id in the request: the request id stands in
    proba, predict = answer["outputs"]
    expected = champion.model.predict_proba(champion.input_example)
    assert proba["shape"] == list(expected.shape)
    assert np.allclose(np.reshape(proba["data"], proba["shape"]), expected)
    assert predict["data"] == champion.model.predict(champion.input_example).tolist()


def test_infer_one_2d_input_in_signature_order(
    client: TestClient, champion: LoadedModel, example_rows: list[dict[str, Any]]
) -> None:
    names = [i["name"] for i in client.get(MODEL).json()["inputs"]]
    data = [[r[n] for n in names] for r in example_rows]
    tensor = {"name": "input-0", "datatype": "BYTES", "shape": [len(data), len(names)], "data": data}
    answer = client.post(f"{MODEL}/infer", json={"inputs": [tensor]}).json()
    assert answer["outputs"][0]["data"] == champion.model.predict(champion.input_example).tolist()


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (lambda b: b.update(extra=1), ["unknown field(s): extra"]),
        (lambda b: b["inputs"].pop(0), ["missing input", "tenure_months"]),
        (lambda b: b["inputs"][0].update(datatype="BYTES"), ["tenure_months", "datatype BYTES", "INT64"]),
        (lambda b: b["inputs"][0].update(datatype="COMPLEX"), ["datatype must be one of"]),
        (lambda b: b["inputs"][0].update(shape=[7]), ["needs 7 value(s)"]),
        (
            lambda b: b["inputs"][6]["data"].__setitem__(0, "weekly-secret"),
            ["row 0 contract", "unknown category"],
        ),
        (
            lambda b: b["inputs"][1]["data"].__setitem__(1, "x"),
            ["row 1 monthly_charges", "expected a number"],
        ),
        (lambda b: b.update(outputs=[{"name": "explain"}]), ["unknown output 'explain'"]),
        (lambda b: b.update(id=5), ["id must be a string"]),
        (lambda b: b["inputs"][0].update(name="nope"), ["unknown input(s): nope"]),
        (lambda b: b["inputs"][0]["parameters"].update(binary_data_size=8), ["binary tensor data"]),
    ],
)
def test_bad_infer_requests_are_400(
    client: TestClient, example_rows: list[dict[str, Any]], mutate: Any, fragments: list[str]
) -> None:
    body: dict[str, Any] = {"inputs": column_inputs(client, example_rows)}
    body["inputs"][0]["parameters"] = {}
    mutate(body)
    error = assert_protocol_error(client.post(f"{MODEL}/infer", json=body), 400, *fragments)
    assert "weekly-secret" not in error


def test_bodies_the_server_cannot_read(client: TestClient, example_rows: list[dict[str, Any]]) -> None:
    url = f"{MODEL}/infer"
    assert_protocol_error(client.post(url, content=b"{nope"), 400, "not valid JSON")
    assert_protocol_error(client.post(url, json=[1]), 400, "JSON object")
    assert_protocol_error(client.post(url, content=b"{}", headers={"content-type": "text/plain"}), 400)
    many = [dict(example_rows[0]) for _ in range(1001)]
    assert_protocol_error(client.post(url, json={"inputs": column_inputs(client, many)}), 413, "1001 rows")
    # No Content-Type at all is read as JSON: Triton's HTTP client sends none.
    body = httpx.Request("POST", "/", json={"inputs": column_inputs(client, example_rows)}).content
    response = client.post(url, content=body)
    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text


def test_not_ready_is_503(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no `with`: the lifespan (the model load) never runs
    assert client.get("/v2/health/live").status_code == 200
    assert_protocol_error(client.get("/v2/health/ready"), 503, "loading")
    assert_protocol_error(client.get(f"{MODEL}/ready"), 503)
    assert_protocol_error(client.post(f"{MODEL}/infer", json={"inputs": []}), 503)
    assert_protocol_error(client.get("/v1/models/ChurnPredictor"), 503)


def test_v1_predict_with_records_and_rows(
    client: TestClient, champion: LoadedModel, example_rows: list[dict[str, Any]]
) -> None:
    expected = champion.model.predict(champion.input_example).tolist()
    assert client.get("/v1/models").json() == {"models": ["ChurnPredictor"]}
    assert client.get("/v1/models/ChurnPredictor").json() == {"name": "ChurnPredictor", "ready": True}
    url = "/v1/models/ChurnPredictor:predict"
    assert client.post(url, json={"instances": example_rows}).json() == {"predictions": expected}
    names = list(example_rows[0])
    rows = [[r[n] for n in names] for r in example_rows]
    assert client.post(url, json={"instances": rows}).json() == {"predictions": expected}
    rows[0][6] = "weekly-secret"
    error = assert_protocol_error(client.post(url, json={"instances": rows}), 400, "row 0 contract")
    assert "weekly-secret" not in error
    assert_protocol_error(client.post(url, json={"inputs": rows}), 400, "'instances'")
    assert_protocol_error(client.post(url, json={"instances": []}), 400, "empty")


def test_every_protocol_counts_in_the_same_metrics(
    client: TestClient, example_rows: list[dict[str, Any]]
) -> None:
    n = len(example_rows)
    client.post("/predict", json={"instances": example_rows})
    client.post("/v1/models/ChurnPredictor:predict", json={"instances": example_rows})
    client.post(f"{MODEL}/infer", json={"inputs": column_inputs(client, example_rows)})
    client.post(
        f"{MODEL}/infer", json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}
    )
    text = client.get("/metrics").text
    labels = 'model_name="ChurnPredictor",model_version="1"'
    assert f'predictions_total{{{labels},outcome="ok"}} 3.0' in text
    assert f'predictions_total{{{labels},outcome="invalid"}} 1.0' in text
    assert f'prediction_rows_total{{{labels},outcome="ok"}} {3.0 * n}' in text
