"""Prometheus metrics: one registry per app, rendered by a plain /metrics route."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator

# Serving latencies are milliseconds; the default buckets start at 5 ms and say little below it.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Metrics:
    """Owns the app's registry and every metric the service records."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        model = ["model_name", "model_version"]
        self.predictions = Counter(
            "predictions",
            "Prediction requests, by model and outcome (ok, invalid, error).",
            [*model, "outcome"],
            registry=self.registry,
        )
        self.rows = Counter("prediction_rows", "Rows predicted, by model.", model, registry=self.registry)
        self.model_latency = Histogram(
            "model_latency_seconds",
            "Time the model alone takes per call, by model.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.reloads = Counter(
            "model_reloads",
            "Checks of the registry for a new model version, by outcome "
            "(reloaded, unchanged, failed, refused).",
            ["outcome"],
            registry=self.registry,
        )

    def instrument(self, app: FastAPI) -> None:
        """HTTP metrics by route template, method and status (requests and latency)."""
        # The instrumentator's in-progress gauge ignores `registry` and lands in the global one,
        # which breaks a second app in the same process; so it stays off.
        Instrumentator(
            should_group_status_codes=False,
            excluded_handlers=["/metrics"],
            registry=self.registry,
        ).instrument(app, latency_lowr_buckets=LATENCY_BUCKETS)

    def render(self) -> bytes:
        return generate_latest(self.registry)
