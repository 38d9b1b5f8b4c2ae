"""The inference log stream: sample, queue without blocking, write off the request path.

`offer` runs on the request path and costs, for a request the sample skips, one random draw; for
a sampled one, one append to a bounded `Mailbox` (no lock, no exception: a full one drops the
record and counts it). The record itself is built by the one daemon thread, which takes what was
offered in batches, builds each record (the caller hands it a builder and the request's answered
objects, which no longer change), masks its inputs and writes the batch to the sink: the JSON,
the HMAC work and the I/O all stay off the request path. Nothing the sink does reaches
the request: its errors are counted and logged at most once per `error_log_interval_s`, with the
exception's class and our own message, never a payload value.

Counters (in the registry passed in; bounded labels only):
    inference_log_records_total{outcome="written|dropped|failed"}
        written: the sink took it; dropped: the queue was full, the log was closed, or close()
        ran out of time before writing it; failed: the sink or building the record raised.
    inference_log_batch_seconds: time one sink write of a batch takes (a slow collector shows here).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from model_api.inference_log.record import FieldMask, InferenceRecord
from model_api.inference_log.sinks import Sink, SinkError
from model_api.mailbox import Mailbox

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
"""How long the idle writer sleeps before it looks again (an offer wakes it sooner)."""

Offer = tuple[Callable[..., InferenceRecord], tuple[Any, ...]]
"""A record's builder and its arguments, called by the writer thread."""

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
        self._pending: Mailbox[Offer] = Mailbox(queue_size)
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

    def offer(self, make_record: Callable[..., InferenceRecord], *args: Any) -> None:
        """Record one answered request if the sample takes it; never blocks, never raises.

        `make_record(*args)` is called later, in the writer thread, and only for a sampled request:
        `args` must not change after the offer (an answered request's objects do not)."""
        if self.takes():
            self.put(make_record, *args)

    def takes(self) -> bool:
        """Whether the sample takes the next request (one random draw below a 100% sample): ask
        before gathering what `put` needs, so a request the sample skips costs nothing more."""
        return self.sample_rate >= 1.0 or self._random() < self.sample_rate

    def put(self, make_record: Callable[..., InferenceRecord], *args: Any) -> None:
        """`offer` without the sample: queue the builder and its arguments, or count a drop."""
        if self._closing.is_set() or not self._pending.put((make_record, args)):
            self._dropped.inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking records, write what is queued within `timeout_s`, count the rest as dropped."""
        self._closing.set()
        self._pending.wake()
        self._thread.join(timeout_s)
        self._abandon.set()
        left = len(self._pending.take())  # a writer still running may take some meanwhile
        if left:
            self._dropped.inc(left)
        if not self._thread.is_alive():
            self.sink.close()  # else the writer is stuck in the sink: it is a daemon, leave it

    def _run(self) -> None:
        pending = self._pending
        while not self._abandon.is_set():
            if not pending:
                if self._closing.is_set():
                    return
                pending.wait(IDLE_WAIT_S)
                continue
            if len(pending) < self.batch_size and self.linger_s > 0 and not self._closing.is_set():
                # Let records gather: one wake-up and one write a linger, not one a request. A
                # thread woken per record takes the GIL from the request path every time (on a
                # busy core that cost a third of the throughput of single-row requests).
                self._closing.wait(self.linger_s)
            self._write(pending.take(self.batch_size))

    def _build(self, batch: list[Offer]) -> list[InferenceRecord]:
        """The offers' records, masked; a builder that raises is counted as failed, not written."""
        records = []
        for make_record, args in batch:
            try:
                records.append(make_record(*args).masked(self.mask))
            except Exception as exc:
                self._failed.inc()
                self._errors.report("building an inference record failed", exc)
        return records

    def _write(self, batch: list[Offer]) -> None:
        started = time.perf_counter()
        records = self._build(batch)
        if not records:
            return
        try:
            self.sink.write(records)
        except Exception as exc:
            written = exc.written if isinstance(exc, SinkError) else 0
            self._written.inc(written)
            self._failed.inc(len(records) - written)
            self._errors.report(
                f"inference log sink {self.sink.name!r} lost {len(records) - written} records", exc
            )
        else:
            self._written.inc(len(records))
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
