"""Batching seen from outside: a real server, many concurrent clients, answers checked row by row."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pandas as pd

from model_api.demo import make_churn_table
from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.support import Registry, server_in_thread


def test_concurrent_mixed_size_requests_get_exactly_their_rows(
    registry: Registry, champion: LoadedModel
) -> None:
    frame, _ = make_churn_table(400, seed=11)
    records = [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    rng = random.Random(5)
    requests: list[list[dict[str, Any]]] = []
    start = 0
    while start < len(records):
        size = rng.choice([1, 1, 1, 2, 5, 17, 40])
        requests.append(records[start : start + size])
        start += size
    bad = {"instances": [{"tenure_months": "not a number"}]}

    # The model itself answers: its calls (~10 ms) overlap enough for requests to share them; the
    # fast path's (~0.5 ms) seldom do with 24 threads of one test client.
    settings = Settings(tracking_uri=registry.tracking_uri, batch_max_rows=32, fast_path="off")
    with server_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:

        def send(i: int) -> httpx.Response:
            if i % 10 == 0:
                return client.post("/predict", json=bad)
            body = {"instances": requests[i], "return_probabilities": i % 3 == 0}
            return client.post("/predict", json=body)

        with ThreadPoolExecutor(max_workers=24) as pool:
            responses = list(pool.map(send, range(len(requests))))
        metrics = client.get("/metrics").text

    for i, response in enumerate(responses):
        if i % 10 == 0:
            assert response.status_code == 422, "a bad request fails alone"
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        alone = pd.DataFrame(requests[i])
        assert body["predictions"] == champion.model.predict(alone).tolist()
        assert ("probabilities" in body) == (i % 3 == 0)
    calls = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("model_latency_seconds_count")
    )
    answered = sum(1 for i in range(len(requests)) if i % 10)
    assert calls < answered, "concurrent requests shared model calls"
