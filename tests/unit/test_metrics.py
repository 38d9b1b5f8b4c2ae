"""Metrics: the model's info, load and readiness gauges, and the batch histograms."""

from __future__ import annotations

from fastapi.testclient import TestClient

from model_api.metrics import Metrics
from model_api.registry import LoadedModel
from tests.support import metric_value as value


def test_model_info_load_and_readiness(client: TestClient, champion: LoadedModel) -> None:
    text = client.get("/metrics").text
    model = {"model_name": "ChurnPredictor", "model_version": "1"}
    info = {**model, "alias": "champion", "run_id": str(champion.run_id)}
    assert value(text, "model_info", **info) == 1.0
    assert value(text, "model_ready") == 1.0
    assert value(text, "model_load_duration_seconds", **model) > 0
    assert value(text, "model_last_load_timestamp_seconds", **model) > 1.7e9


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
