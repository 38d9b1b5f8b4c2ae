"""Prometheus metrics: one registry per app, rendered by a plain /metrics route.

With several worker processes (PROMETHEUS_MULTIPROC_DIR set before prometheus_client is imported),
every worker writes its values to files in that directory and /metrics aggregates all of them
through a MultiProcessCollector in a fresh registry per scrape, so a scrape answered by any worker
reports the whole server. Gauges say how they combine across workers (`multiprocess_mode`), and
the live-only gauges of workers that died are removed before each scrape.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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

# How late the event loop runs its timer: a millisecond is noise, tens of them a saturated core.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# Rows per model call: single rows up to a full request (MODEL_API_MAX_ROWS defaults to 1000).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

SHED_REASONS = ("overloaded", "expired", "disconnected")
"""Why a prediction request was shed (`requests_shed_total{reason}`); each series exists from startup."""

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


class Metrics:
    """Owns the app's registry and every metric the service records.

    Label values are bounded: model name and version, outcome, error code, route template and
    method. Request ids, raw paths and feature values never become labels.
    """

    content_type = CONTENT_TYPE_LATEST

    _served: tuple[str, str, str, str] | None = None

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiproc_dir: Path | None = None
        if path := os.environ.get(MULTIPROC_ENV):
            self.multiproc_dir = Path(path)
            self.multiproc_dir.mkdir(parents=True, exist_ok=True)
            sweep_dead_workers(self.multiproc_dir)
        model = ["model_name", "model_version"]
        self.predictions = Counter(
            "predictions",
            "Prediction requests, by model and outcome (ok, invalid, error).",
            [*model, "outcome"],
            registry=self.registry,
        )
        self.rows = Counter(
            "prediction_rows",
            "Rows predicted, by model and outcome (ok, error).",
            [*model, "outcome"],
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "model_latency_seconds",
            "Time the model alone takes per call, by model.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "queue_wait_seconds",
            "Time a request waits for the model (batcher queue) before its batch runs, by model.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "model_batch_size",
            "Rows per model call (one micro-batch), by model.",
            model,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "model_info",
            "The served model: always 1, with its name, version, alias and run id as labels.",
            [*model, "alias", "run_id"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.fast_path = Gauge(
            "model_fast_path",
            "1 when the compiled fast path answers for this model version, 0 when the model itself does.",
            model,
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 when the model is loaded and warmed and the service is not draining (any live worker).",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.load_duration = Gauge(
            "model_load_duration_seconds",
            "How long the last model load took (resolve, download, deserialize, warm up), by model.",
            model,
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )
        self.last_load = Gauge(
            "model_last_load_timestamp_seconds",
            "Unix time of the last model load, by model.",
            model,
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self._errors_by_code: dict[tuple[str, ...], Counter] = {}
        self._predictions_by: dict[tuple[str, ...], Counter] = {}
        self._rows_by: dict[tuple[str, ...], Counter] = {}
        """Labelled children of `errors`, `predictions` and `rows`, by their labels (`_child`)."""
        self.errors = Counter(
            "errors",
            "Error answers, by the error code of the JSON body (invalid_input, model_not_ready, ...).",
            ["code"],
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "http_requests_inprogress",
            "Requests being answered now, by route template and method (summed over workers).",
            ["handler", "method"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.shed = Counter(
            "requests_shed",
            "Prediction requests answered without reaching the model, by reason: overloaded "
            "(refused at admission), expired (budget spent in the queue), disconnected (client gone).",
            ["reason"],
            registry=self.registry,
        )
        self.shed_by_reason = {reason: self.shed.labels(reason) for reason in SHED_REASONS}
        """The `requests_shed_total` child of each reason (a refusal must cost as little as it can)."""
        self.in_flight = Gauge(
            "requests_in_flight",
            "Prediction requests admitted and not yet answered (summed over workers).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "event_loop_lag_seconds",
            "How late the workers' event loops ran a periodic timer (every 100 ms; 10 ms with "
            "MODEL_API_MAX_LOOP_LAG_MS set), one observation per tick, summed over workers: near 0 "
            "while a worker keeps up, tens of milliseconds when its core is saturated or a callback "
            "or a garbage collection holds its loop. A late loop ticks less often, so the share of "
            "late ticks understates the share of late time.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Prediction requests waiting for the model (summed over workers).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.model_ready.set(0)
        # HTTP requests and latency by route template, method and status, under the names and
        # labels of prometheus-fastapi-instrumentator (the rules and dashboard use them), recorded
        # by the edge layer itself (middleware/access.py): the instrumentator's middleware built a
        # Request, a Response and an Info for every answer, about 40 us a request (measured).
        self.http_requests = Counter(
            "http_requests",
            "Total number of requests by method, status and handler.",
            ["handler", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            ["handler", "method", "status"],
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

    def model_loaded(
        self,
        name: str,
        version: str | None,
        alias: str | None,
        run_id: str | None,
        load_seconds: float,
        loaded_at: datetime,
    ) -> None:
        """Record which model is served, how long it took to load, and when; mark the service ready.

        After a rollout the previous model's `model_info` series drops to 0."""
        labels = (name, version or "", alias or "", run_id or "")
        if self._served is not None and self._served != labels:
            self.model_info.labels(*self._served).set(0)
        self._served = labels
        self.model_info.labels(*labels).set(1)
        self.load_duration.labels(name, version or "").set(load_seconds)
        self.last_load.labels(name, version or "").set(loaded_at.timestamp())
        self.model_ready.set(1)

    def set_ready(self, ready: bool) -> None:
        self.model_ready.set(1 if ready else 0)

    def observe_batch(self, model_name: str, version: str | None, rows: int, queue_wait_s: float) -> None:
        """Record one model call of the micro-batcher: how many rows it carried, and how long a
        request waited in the queue before its batch ran (call once per request for the wait, or
        once per batch with the oldest request's wait; once per batch for the size)."""
        labels = model_name, version or ""
        self.batch_size.labels(*labels).observe(rows)
        self.queue_wait.labels(*labels).observe(queue_wait_s)

    def count_prediction(self, name: str, version: str, outcome: str, rows: int) -> None:
        """Count one answered prediction request (`predictions_total`) and its rows that reached the
        model (`prediction_rows_total`, outcome ok or error; none when `rows` is 0)."""
        _child(self._predictions_by, self.predictions, name, version, outcome).inc()
        if rows:
            row_outcome = "ok" if outcome == "ok" else "error"
            _child(self._rows_by, self.rows, name, version, row_outcome).inc(rows)

    def count_error(self, code: str) -> None:
        self.error_counter(code).inc()

    def error_counter(self, code: str) -> Counter:
        """The `errors_total` child of an error code (error codes are the service's own: a few
        dozen at most)."""
        return _child(self._errors_by_code, self.errors, code)

    def render(self) -> bytes:
        """The Prometheus text of this process, or of every worker in multiprocess mode."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        sweep_dead_workers(self.multiproc_dir)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiproc_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """This process stops serving: drop its live gauges (counters and histograms stay)."""
        if self.multiproc_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiproc_dir))  # type: ignore[no-untyped-call]


def sweep_dead_workers(path: Path) -> list[int]:
    """Mark dead every worker whose live gauges are still on disk; returns their pids.

    A worker killed outright (OOM, SIGKILL) cannot clean up after itself; without this its
    in-progress requests and model info would be reported forever.
    """
    dead: list[int] = []
    for file in path.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(file.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid not in dead and not _alive(pid):
            dead.append(pid)
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return dead


def reset_multiproc_dir(path: Path) -> None:
    """Create the metrics directory and empty it of a previous run's files (before workers start)."""
    path.mkdir(parents=True, exist_ok=True)
    for file in path.glob("*.db"):
        file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _child(cache: dict[tuple[str, ...], Counter], counter: Counter, *labels: str) -> Counter:
    """`counter.labels(*labels)`, looked up once and kept in `cache`: prometheus_client's `labels()`
    costs ~1.8 us a call, and the children asked for on every request are the same few."""
    child = cache.get(labels)
    if child is None:
        child = cache[labels] = counter.labels(*labels)
    return child


BULK_OBSERVE_MIN = 8
"""From this many amounts `observe_all` counts per bucket; fewer are observed one by one (cheaper)."""


def observe_all(histogram: Histogram, amounts: np.ndarray) -> None:
    """`histogram.observe(a)` for every a of `amounts` (a 1-D float array), counted per bucket.

    Each observation takes two locks in prometheus_client (~1.5 us); 64 probabilities of one
    request took ~100 us one by one, ~8 us here: the buckets are found in one `searchsorted` and
    each bucket touched is incremented once, by its count. prometheus_client has no bulk
    observation, so this reads the histogram child's own fields (`_upper_bounds`, `_buckets`,
    `_sum`, stable since 0.1); without them it observes one by one. The same buckets and count as
    one by one (`value <= bound`, NaN in no bucket); the sum adds the amounts' own sum, in order,
    so it can differ from one-by-one addition in the last bits. Works in multiprocess mode (the
    fields are its file-backed values)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if len(amounts) < BULK_OBSERVE_MIN or bounds is None or buckets is None or total is None:
        for amount in amounts.tolist():
            histogram.observe(amount)
        return
    counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(sum(amounts.tolist()))
