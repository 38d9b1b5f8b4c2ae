"""Load test for any served model: payloads are built from the server's own /model/info.

    locust -f locustfile.py --host http://127.0.0.1:8000              # web UI on :8089
    make loadtest HOST=http://127.0.0.1:8000 DURATION=60s USERS=100    # headless, CSV and HTML reports

With API keys on, give one in MODEL_API_KEY: it is sent as `Authorization: Bearer ...`.

Tasks: single-row and small-batch /predict (with and without probabilities), /model/info, and the
probes, weighted as in the course module: /health three times as often as /predict.
"""

from __future__ import annotations

import os
import random
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

SMALL_BATCH = 8


class Payloads:
    """Request bodies made from the model's input example and signature."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.names = [c["name"] for c in info["inputs"]]
        self.rows: list[dict[str, Any]] = info["input_example"] or [self._placeholder(info["inputs"])]
        self.probabilities = bool(info.get("probabilities"))

    @staticmethod
    def _placeholder(inputs: list[dict[str, Any]]) -> dict[str, Any]:
        def value(column: dict[str, Any]) -> Any:
            if column.get("categories"):
                return column["categories"][0]
            return {"string": "", "boolean": False}.get(column["type"], 0)

        return {c["name"]: value(c) for c in inputs}

    def records(self, n: int) -> list[dict[str, Any]]:
        return [random.choice(self.rows) for _ in range(n)]

    def ordered(self, n: int) -> list[list[Any]]:
        return [[r[name] for name in self.names] for r in self.records(n)]


PAYLOADS: dict[str, Payloads] = {}


def auth_headers() -> dict[str, str]:
    key = os.environ.get("MODEL_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


@events.test_start.add_listener
def fetch_model_info(environment: Environment, **_: Any) -> None:
    """Read the served model's contract once, before any user starts."""
    import httpx

    assert environment.host, "give --host"
    info = httpx.get(f"{environment.host.rstrip('/')}/model/info", headers=auth_headers(), timeout=30).json()
    PAYLOADS["model"] = Payloads(info)


class ModelAPIUser(HttpUser):
    """A client of the served model."""

    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.client.headers.update(auth_headers())

    @property
    def payloads(self) -> Payloads:
        return PAYLOADS["model"]

    def _predict(self, body: dict[str, Any], name: str, rows: int) -> None:
        with self.client.post("/predict", json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif len(response.json().get("predictions", [])) != rows:
                response.failure("wrong number of predictions")

    @task(2)
    def predict_one(self) -> None:
        self._predict({"instances": self.payloads.records(1)}, "/predict [1 row]", 1)

    @task(1)
    def predict_small_batch(self) -> None:
        self._predict(
            {"features": self.payloads.ordered(SMALL_BATCH)}, f"/predict [{SMALL_BATCH} rows]", SMALL_BATCH
        )

    @task(1)
    def predict_with_probabilities(self) -> None:
        body = {"instances": self.payloads.records(2), "return_probabilities": self.payloads.probabilities}
        self._predict(body, "/predict [probabilities]", 2)

    @task(1)
    def model_info(self) -> None:
        self.client.get("/model/info")

    @task(12)
    def health(self) -> None:
        self.client.get("/health")

    @task(2)
    def ready(self) -> None:
        self.client.get("/ready")
