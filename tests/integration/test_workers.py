"""`model-api serve` with two workers: /metrics counts every worker's predictions, whoever answers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support import (
    Registry,
    free_port,
    log_entries,
    running_service,
    service_env,
    stop,
    wait_until,
)

OK = re.compile(
    r'^predictions_total\{model_name="ChurnPredictor",model_version="1",outcome="ok"\} (\S+)$', re.M
)


def ok_count(metrics_text: str) -> float:
    match = OK.search(metrics_text)
    return float(match.group(1)) if match else 0.0


def parse_samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def lag_ticks(metrics_text: str) -> float:
    """How many times the workers measured their event loop's lag, summed over them."""
    return sum(s.value for s in parse_samples(metrics_text) if s.name == "event_loop_lag_seconds_count")


def per_worker(metrics_dir: Path, scratch: Path, kind: str, read: Callable[[str], float]) -> dict[int, float]:
    """`read` of each worker's own `kind` file (counter, histogram) alone, through prometheus_client's
    public API."""
    values: dict[int, float] = {}
    for file in metrics_dir.glob(f"{kind}_*.db"):
        pid = int(file.stem.split("_")[1])
        alone = scratch / f"{kind}-{pid}"
        alone.mkdir(exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        values[pid] = read(generate_latest(registry).decode())
    return values


def per_worker_counts(metrics_dir: Path, scratch: Path) -> dict[int, float]:
    """Each worker's own count of ok predictions."""
    return per_worker(metrics_dir, scratch, "counter", ok_count)


def stale_counter(metrics_dir: Path) -> None:
    """A previous run's file: 1000 predictions that must not be counted (the directory is emptied)."""
    code = (
        "from prometheus_client import Counter\n"
        "c = Counter('predictions', 'x', ['model_name', 'model_version', 'outcome'])\n"
        "c.labels('ChurnPredictor', '1', 'ok').inc(1000)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert list(metrics_dir.glob("counter_*.db"))


def test_two_workers_report_every_prediction(registry: Registry, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale_counter(metrics_dir)
    env = service_env(
        registry.tracking_uri,
        free_port(),
        MODEL_API_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    rows = [
        {
            "tenure_months": 2,
            "monthly_charges": 95.5,
            "total_charges": 190.0,
            "support_calls": 4,
            "num_services": 3,
            "age": 37,
            "contract": "month-to-month",
            "payment_method": "electronic-check",
            "internet_service": "fiber-optic",
            "paperless_billing": "yes",
        }
    ]
    with running_service(env, tmp_path / "server.log") as server:
        sent = 0

        def both_workers_served() -> bool:
            nonlocal sent
            for _ in range(5):  # a fresh connection each time, so the kernel spreads them
                response = httpx.post(f"{server.url}/predict", json={"instances": rows}, timeout=10)
                assert response.status_code == 200, response.text
                sent += 1
            served = [n for n in per_worker_counts(metrics_dir, tmp_path / "scratch").values() if n > 0]
            return len(served) >= 2

        (tmp_path / "scratch").mkdir()
        wait_until(both_workers_served, 60, "both workers to answer predictions", interval=0)
        workers = per_worker_counts(metrics_dir, tmp_path / "scratch")
        assert sum(workers.values()) == sent

        for _ in range(8):  # whichever worker answers the scrape, it reports all of them
            assert ok_count(httpx.get(f"{server.url}/metrics", timeout=10).text) == sent

        # Every worker measures its event loop's lag (the check itself is off by default).
        ticks = per_worker(metrics_dir, tmp_path / "scratch", "histogram", lag_ticks)
        assert len(ticks) == 2 and all(n > 0 for n in ticks.values()), ticks

        # A worker killed outright: its counts stay, its live gauges go, a new worker replaces it.
        victim = next(pid for pid, n in workers.items() if n > 0)
        assert list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: not list(metrics_dir.glob(f"gauge_live*_{victim}.db")), 30, "the dead worker's gauges"
        )
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert ok_count(text) == sent
        values = {(m.name, tuple(sorted(m.labels.items()))): m.value for m in parse_samples(text)}
        assert values[("model_ready", ())] == 1.0
        info = [labels for (name, labels), v in values.items() if name == "model_info" and v == 1.0]
        assert [dict(labels)["alias"] for labels in info] == ["champion"]
        # ...and the loop lag is still measured, summed over the workers alive.
        ticks_now = lag_ticks(text)
        wait_until(
            lambda: lag_ticks(httpx.get(f"{server.url}/metrics", timeout=10).text) > ticks_now,
            30,
            "more event loop lag measurements",
        )
        code = stop(server.process)

    assert code == 0, server.log()
    entries = log_entries(server.log())
    access = [e for e in entries if e["logger"] == "model_api.access" and e.get("route") == "/predict"]
    assert len(access) == sent
    assert all(e["status"] == 200 and e["method"] == "POST" and e["request_id"] for e in access)
    assert not [e for e in entries if e["logger"] == "uvicorn.access"]
