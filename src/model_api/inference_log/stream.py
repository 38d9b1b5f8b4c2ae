"""The inference log stream: sample, queue without blocking, write off the request path.

`offer` runs on the request path and costs, for a request the sample skips, one random draw; for
a sampled one, building the record and one non-blocking put. A full queue drops the record and
counts it. One daemon thread takes records off the queue in batches, masks their inputs (the
HMAC work stays off the request path) and writes them to the sink. Nothing the sink does reaches
the request: its errors are counted and logged at most once per `error_log_interval_s`, with the
exception's class and our own message, never a payload value.

Counters (in the registry passed in; bounded labels only):
    inference_log_records_total{outcome="written|dropped|failed"}
        written: the sink took it; dropped: the queue was full, the log was closed, or close()
        ran out of time before writing it; failed: the sink or building the record raised.
    inference_log_batch_seconds: time one sink write of a batch takes (a slow collector shows here).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from model_api.inference_log.record import FieldMask, InferenceRecord
from model_api.inference_log.sinks import Sink, SinkError

log = logging.getLogger(__name__)

BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class InferenceLog:
    """A sampled, bounded, non-blocking stream of inference records into one sink.

    `sample_rate` in [0, 1] is the share of offers recorded; `queue_size` the records waiting at
    most; `batch_size` the most records one sink write takes; `linger_s` how long the writer lets
    records gather after the first of a batch arrives. `rng` makes the sample reproducible.
    """

    def __init__(
        self,
        sink: Sink,
        registry: CollectorRegistry,
        *,
        sample_rate: float = 1.0,
        queue_size: int = 10_000,
        mask: FieldMask | None = None,
        batch_size: int = 256,
        rng: random.Random | None = None,
        error_log_interval_s: float = 60.0,
        linger_s: float = 0.05,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError("sample_rate must be within [0, 1]")
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be >= 1")
        self.sink = sink
        self.sample_rate = sample_rate
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.mask = mask or FieldMask()
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not security
        self._queue: queue.Queue[InferenceRecord | None] = queue.Queue(maxsize=queue_size)
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._errors = _ThrottledLog(error_log_interval_s)
        records = Counter(
            "inference_log_records",
            "Inference log records, by outcome: written, dropped (queue full or closing), failed.",
            ["outcome"],
            registry=registry,
        )
        self._written, self._dropped, self._failed = (
            records.labels(o) for o in ("written", "dropped", "failed")
        )
        self._batch_seconds = Histogram(
            "inference_log_batch_seconds",
            "Time one write of a batch of inference log records to the sink takes.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def offer(self, make_record: Callable[[], InferenceRecord]) -> None:
        """Record one answered request if the sample takes it; never blocks, never raises.

        `make_record` is only called for a sampled request, so build the record inside it."""
        if self.sample_rate < 1.0 and self._random() >= self.sample_rate:
            return
        if self._closing.is_set():
            self._dropped.inc()
            return
        try:
            record = make_record()
        except Exception as exc:
            self._failed.inc()
            self._errors.report("building an inference record failed", exc)
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._dropped.inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking records, write what is queued within `timeout_s`, count the rest as dropped."""
        self._closing.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wake the writer if it waits on an empty queue
        self._thread.join(timeout_s)
        self._abandon.set()
        left = 0
        while True:
            try:
                left += self._queue.get_nowait() is not None
            except queue.Empty:
                break
        if left:
            self._dropped.inc(left)
        if not self._thread.is_alive():
            self.sink.close()  # else the writer is stuck in the sink: it is a daemon, leave it

    def _run(self) -> None:
        while not self._abandon.is_set():
            try:
                # close() sets _closing before it queues the wake-up None, so once the None is
                # taken, _closing is seen here and the writer does not wait on an empty queue.
                closing = self._closing.is_set()
                first = self._queue.get_nowait() if closing else self._queue.get(timeout=1.0)
            except queue.Empty:
                first = None
            if first is not None and not closing and self.linger_s > 0:
                # Let records gather: one wake-up and one write a linger, not one a request. A
                # thread woken per record takes the GIL from the request path every time (on a
                # busy core that cost a third of the throughput of single-row requests).
                self._closing.wait(self.linger_s)
            batch = [] if first is None else [first]
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    batch.append(item)
            if batch:
                self._write(batch)
            elif self._closing.is_set():
                return

    def _write(self, batch: list[InferenceRecord]) -> None:
        started = time.perf_counter()
        try:
            self.sink.write([record.masked(self.mask) for record in batch])
        except Exception as exc:
            written = exc.written if isinstance(exc, SinkError) else 0
            self._written.inc(written)
            self._failed.inc(len(batch) - written)
            self._errors.report(
                f"inference log sink {self.sink.name!r} lost {len(batch) - written} records", exc
            )
        else:
            self._written.inc(len(batch))
        self._batch_seconds.observe(time.perf_counter() - started)


class _ThrottledLog:
    """Logs a warning at most once per interval, saying how many were held back since."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next = 0.0
        self._held = 0

    def report(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self.interval_s
        # Our SinkError messages carry counts and status codes only; any other exception's message
        # may quote a payload, so only its class is logged.
        reason = str(exc) if isinstance(exc, SinkError) else type(exc).__name__
        log.warning("%s: %s (%d similar errors not logged since the last one)", what, reason, held)
