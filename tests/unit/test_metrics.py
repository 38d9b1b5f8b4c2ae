"""Metrics: the model's info, load and readiness gauges, and the batch histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from model_api.metrics import Metrics, observe_all
from model_api.registry import LoadedModel
from tests.support import metric_samples
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


def test_predictions_and_their_rows_are_counted_by_version_and_outcome() -> None:
    metrics = Metrics()
    metrics.count_prediction("M", "3", "ok", 5)
    metrics.count_prediction("M", "3", "ok", 2)
    metrics.count_prediction("M", "3", "invalid", 0)  # refused by the contract: no rows reached the model
    metrics.count_prediction("M", "3", "error", 4)
    metrics.count_prediction("M", "4", "ok", 1)  # a new version: its own series
    text = metrics.render().decode()
    v3, v4 = {"model_name": "M", "model_version": "3"}, {"model_name": "M", "model_version": "4"}
    assert value(text, "predictions_total", **v3, outcome="ok") == 2
    assert value(text, "predictions_total", **v3, outcome="invalid") == 1
    assert value(text, "predictions_total", **v3, outcome="error") == 1
    assert value(text, "predictions_total", **v4, outcome="ok") == 1
    assert value(text, "prediction_rows_total", **v3, outcome="ok") == 7
    assert value(text, "prediction_rows_total", **v3, outcome="error") == 4
    assert value(text, "prediction_rows_total", **v4, outcome="ok") == 1
    rows_series = [labels for name, labels in metric_samples(text) if name == "prediction_rows_total"]
    assert len(rows_series) == 3  # none for the invalid request's rows


@pytest.mark.parametrize("n", [0, 1, 7, 8, 64, 513])
def test_observe_all_counts_like_observing_one_by_one(n: int) -> None:
    """Per bucket in bulk or one by one: the same buckets and count (a value on a bound falls in
    that bound's bucket, NaN in none), and the same sum up to rounding."""
    rng = np.random.default_rng(n)
    bounds = (0.05, 0.1, 0.5, 1.0)
    pool = np.array([*bounds, -1.0, 0.0, 0.3, 0.99, 2.0, math.inf, math.nextafter(0.5, 1.0)])
    amounts = rng.choice(pool, n) if n != 513 else rng.random(n)
    rendered = []
    for bulk in (True, False):
        registry = CollectorRegistry()
        child = Histogram("h", "h", ["m"], buckets=bounds, registry=registry).labels("x")
        if bulk:
            observe_all(child, amounts)
        else:
            for a in amounts.tolist():
                child.observe(a)
        rendered.append(generate_latest(registry).decode())
    bulk_text, one_text = rendered
    for le in ("0.05", "0.1", "0.5", "1.0", "+Inf"):
        assert value(bulk_text, "h_bucket", m="x", le=le) == value(one_text, "h_bucket", m="x", le=le), le
    assert value(bulk_text, "h_count", m="x") == value(one_text, "h_count", m="x") == n
    bulk_sum, one_sum = value(bulk_text, "h_sum", m="x"), value(one_text, "h_sum", m="x")
    assert bulk_sum == pytest.approx(one_sum, rel=1e-12) or (math.isinf(bulk_sum) and bulk_sum == one_sum)


def test_observe_all_leaves_nan_out_of_every_bucket() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", buckets=(1.0,), registry=registry)
    observe_all(histogram, np.array([0.5] * 8 + [math.nan] * 8))
    text = generate_latest(registry).decode()
    assert value(text, "h_bucket", le="1.0") == value(text, "h_bucket", le="+Inf") == 8
    assert math.isnan(value(text, "h_sum"))
