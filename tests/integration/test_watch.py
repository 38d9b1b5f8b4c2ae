"""Watching the model, app-level: inference log records joined by request id to the answers (a real
file and a real HTTP receiver), prediction and feature metrics, and a shadow challenger whose
agreement with the champion reads the share of rows the two registered versions agree on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_api.inference_log import REQUEST_EVENT, RESPONSE_EVENT
from model_api.main import create_app
from model_api.registration import move_alias
from model_api.settings import Settings
from tests.api.test_kserve_protocols import column_inputs
from tests.integration.test_inference_log_http import receiver
from tests.support import Registry, free_port, make_registry, metric_value, register_version, wait_until

MODEL = "ChurnPredictor"


def requests_of_every_route(client: TestClient, rows: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """(request id, route template, body sent) for one request to each prediction route."""
    names = list(rows[0])
    return [
        ("rid-predict", "/predict", {"instances": rows, "return_probabilities": True}),
        (
            "rid-invocations",
            "/invocations",
            {"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in rows]}},
        ),
        ("rid-v1", "/v1/models/{name}:predict", {"instances": rows}),
        ("rid-v2", "/v2/models/{name}/infer", {"inputs": column_inputs(client, rows)}),
    ]


def post(client: TestClient, route: str, body: Any, request_id: str) -> Any:
    path = route.replace("{name}", MODEL)
    response = client.post(path, json=body, headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    return response


def test_file_records_join_every_route_s_answer_by_request_id(
    settings: Settings, tmp_path: Path, example_rows: list[dict[str, Any]]
) -> None:
    path = tmp_path / "log" / "inference.jsonl"
    settings = settings.model_copy(update={"inference_log": "file", "inference_log_path": str(path)})
    answers: dict[str, tuple[str, Any, Any, int]] = {}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for rid, route, body in requests_of_every_route(client, example_rows):
            response = post(client, route, body, rid)
            assert response.status_code == 200, response.text
            answers[rid] = (route, body, response.json(), 200)
        bad = {"instances": [{**example_rows[0], "contract": "weekly"}]}
        response = post(client, "/predict", bad, "rid-invalid")
        assert response.status_code == 422
        answers["rid-invalid"] = ("/predict", bad, None, 422)
        version = client.get("/model/info").json()["version"]
    # The lifespan closed the stream: every record is written by now.
    records = {r["request_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert set(records) == set(answers)
    for rid, (route, body, answer, status) in answers.items():
        record = records[rid]
        assert (record["route"], record["status_code"]) == (route, status)
        assert (record["model_name"], record["model_version"]) == (MODEL, version)
        assert record["inputs"] == body
        assert record["latency_ms"] > 0
        assert record["time"].endswith("Z")
        if answer is not None:
            assert record["outputs"] == answer
    assert records["rid-invalid"]["outputs"]["error"]["code"] == "invalid_input"


def test_http_receiver_gets_kserve_events_joined_by_request_id(
    settings: Settings, example_rows: list[dict[str, Any]]
) -> None:
    with receiver() as seen:
        settings = settings.model_copy(update={"inference_log": "http", "inference_log_url": seen.url})
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            body = {"instances": example_rows}
            answer = post(client, "/predict", body, "rid-http").json()
        # Closing the app wrote what was queued.
        events = {(h["ce-id"], h["ce-type"]): (h, payload) for h, payload in seen.events}
    (headers, sent), (_, answered) = events["rid-http", REQUEST_EVENT], events["rid-http", RESPONSE_EVENT]
    assert sent == body
    assert answered == answer
    assert (headers["ce-route"], headers["ce-statuscode"]) == ("/predict", "200")


def test_a_dead_collector_fails_no_request(settings: Settings, example_rows: list[dict[str, Any]]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/events"
    settings = settings.model_copy(
        update={"inference_log": "http", "inference_log_url": dead, "inference_log_timeout_s": 0.2}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for i in range(20):
            assert post(client, "/predict", {"instances": example_rows}, f"rid-{i}").status_code == 200

        def records(outcome: str) -> float:
            text = client.get("/metrics").text
            return metric_value(text, "inference_log_records_total", outcome=outcome)

        # Each record offered is failed by the sink or dropped: none written, every one counted.
        wait_until(lambda: records("failed") + records("dropped") == 20, 30, "the records to be lost")
        assert records("written") == 0


def test_prediction_and_feature_metrics(settings: Settings, example_rows: list[dict[str, Any]]) -> None:
    highest = max(int(r["tenure_months"]) for r in example_rows)
    outside = [{**example_rows[0], "tenure_months": highest + 1}, {**example_rows[1], "tenure_months": -1}]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answer = client.post("/predict", json={"instances": [*example_rows, *outside]}).json()
        client.post("/predict", json={"instances": example_rows, "return_probabilities": True})
        text = client.get("/metrics").text
        version = client.get("/model/info").json()["version"]
    labels = {"model_name": MODEL, "model_version": version}
    counted = [metric_value(text, "predicted_class_total", **labels, predicted_class=str(c)) for c in (0, 1)]
    assert sum(counted) == len(example_rows) * 2 + 2
    assert counted[1] >= answer["predictions"].count(1)
    flagged = metric_value(
        text, "feature_values_flagged_total", **labels, feature="tenure_months", kind="out_of_range"
    )
    assert flagged == 2  # the example rows define the range: only the two rows outside it count
    # Probabilities were asked for once: one observation a row of that request.
    assert metric_value(text, "positive_class_probability_count", **labels) == len(example_rows)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str, str]:
    """A registry whose champion (version 1) and challenger (version 2, other trees) differ."""
    registry = make_registry(tmp_path_factory.mktemp("shadow"), n_trees=10)
    challenger = register_version(registry.tracking_uri, registry.root / "artifacts", seed=7, n_trees=3)
    move_alias(registry.tracking_uri, MODEL, "challenger", challenger)
    return registry, registry.demo.version, challenger


def rows_agreeing(registry: Registry, champion: str, challenger: str, agree: int, differ: int) -> Any:
    """`agree` rows the two versions label alike and `differ` rows they do not, found by asking
    both models directly, with the mean absolute probability difference over the rows chosen."""
    from model_api.demo import make_churn_table

    pool, _ = make_churn_table(600, seed=11)
    first = registry.load(f"models:/{MODEL}/{champion}").model
    second = registry.load(f"models:/{MODEL}/{challenger}").model
    same = first.predict(pool) == second.predict(pool)
    chosen = np.concatenate([np.flatnonzero(same)[:agree], np.flatnonzero(~same)[:differ]])
    assert len(chosen) == agree + differ, "the pool holds enough rows of each kind"
    rows = pool.iloc[chosen].reset_index(drop=True)
    difference = np.abs(first.predict_proba(rows) - second.predict_proba(rows)).mean(axis=1).mean()
    records = json.loads(rows.to_json(orient="records"))
    return records, float(difference)


def test_shadow_agreement_reads_the_share_of_equal_labels(two_versions: tuple[Registry, str, str]) -> None:
    registry, champion, challenger = two_versions
    records, difference = rows_agreeing(registry, champion, challenger, agree=12, differ=4)
    settings = Settings(
        model_uri=f"models:/{MODEL}@champion",
        tracking_uri=registry.tracking_uri,
        shadow_uri=f"models:/{MODEL}@challenger",
        shadow_sample_rate=1.0,
        shadow_queue_size=64,
        reload_interval_s=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        info = client.get("/model/info").json()
        assert info["shadow"]["version"] == challenger
        assert info["shadow"]["error"] is None
        for start in range(0, len(records), 4):  # four requests; two ask for probabilities
            body = {"instances": records[start : start + 4], "return_probabilities": start % 8 == 0}
            assert client.post("/predict", json=body).status_code == 200
        labels = {"model_name": MODEL, "champion_version": champion, "challenger_version": challenger}

        def compared() -> float:
            text = client.get("/metrics").text
            return sum(
                metric_value(text, "shadow_rows_total", **labels, agreement=a) for a in ("equal", "different")
            )

        wait_until(lambda: compared() == len(records), 30, "the shadow to score every request")
        text = client.get("/metrics").text
    equal = metric_value(text, "shadow_rows_total", **labels, agreement="equal")
    assert equal / len(records) == 12 / 16
    assert metric_value(text, "shadow_requests_total", challenger_version=challenger, outcome="scored") == 4
    # Requests that waited for the shadow's thread were scored together: one to four scorings.
    assert 1 <= metric_value(text, "shadow_latency_seconds_count", challenger_version=challenger) <= 4
    count = metric_value(text, "shadow_probability_difference_count", **labels)
    total = metric_value(text, "shadow_probability_difference_sum", **labels)
    assert count == len(records)
    assert total / count == pytest.approx(difference)
    assert (
        metric_value(
            text, "shadow_model_info", model_name=MODEL, model_version=challenger, alias="challenger"
        )
        == 1
    )


def test_a_challenger_that_cannot_load_leaves_the_champion_serving(
    settings: Settings, example_rows: list[dict[str, Any]]
) -> None:
    settings = settings.model_copy(
        update={"shadow_uri": f"models:/{MODEL}@nobody", "shadow_sample_rate": 1.0}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/predict", json={"instances": example_rows}).status_code == 200
        shadow = client.get("/model/info").json()["shadow"]
    assert shadow["version"] is None
    assert "nobody" in shadow["error"]
