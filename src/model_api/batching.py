"""The micro-batcher: concurrent predictions merged into one model call, behind the predictor's interface.

Continuous batching: requests queue in arrival order; whenever a model thread is free, the queued
requests (up to `max_rows` rows) go to the model as one batch. While the model works, new requests
queue up and form the next batch, so the batch size follows the load by itself:

- a lone request finds the model idle and is dispatched at once (no added latency at concurrency 1);
- under load the model never idles and every call carries as many rows as arrived during the last.

A model call costs nearly the same for 1 row as for hundreds, so splitting the requests of one
round of concurrent clients over two calls halves throughput. The batcher remembers the largest
batch of the last second (the clients' concurrency): when a model thread is free but fewer
requests than that are queued, it waits for the rest, at most `max_wait_s` after the first and no
longer than the last model call took (the most the wait can save). Measured on the demo model with
8 clients: 1.7x the requests per second of dispatching at once. With model_threads > 1 a free
thread also waits that long while others are busy.

Each request keeps its own rows, in order, and gets back exactly their predictions. A model error
fails only the requests it comes from: a failed batch is split and retried until the failing
requests stand alone. A request larger than `max_rows` runs alone.

When the compiled fast path serves (`fastserve.py`), a batch of up to `INLINE_MAX_ROWS` rows is
answered on the event loop as soon as it is dispatched (~0.06-2 ms): the hand-off to a model thread
and the loop's wake-up from it cost more than running it here. Merging still works as above: every request
queued in the same turn of the loop (and, under load, while the last call ran) shares one call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field

from model_api.admission import Ticket
from model_api.contract import Batch
from model_api.errors import ModelNotReady, PredictionFailed, ServingError
from model_api.fastserve import INLINE_MAX_ROWS
from model_api.inputs import ModelInput, ModelSpec, PyfuncBatch
from model_api.metrics import Metrics
from model_api.predictor import Prediction, Predictor
from model_api.registry import LoadedModel

# How long the size of a batch of several requests is remembered as the clients' concurrency.
CONCURRENCY_MEMORY_S = 1.0


@dataclass
class _Pending:
    batch: ModelInput
    probabilities: bool
    future: asyncio.Future[Prediction]
    ticket: Ticket | None = None
    queued_at: float = field(default_factory=time.perf_counter)

    def dropped(self, now: float) -> bool:
        """Whether the request left the queue (cancelled) or its deadline passed (then it is
        answered Expired here): it must not take a place in a batch."""
        if self.future.done():
            return True
        if self.ticket is not None and self.ticket.expired(now):
            self.ticket.leave()
            self.future.set_exception(self.ticket.expired_error())
            return True
        return False

    def start(self) -> bool:
        """The request's rows go to the model now: False if it must be skipped (see Ticket.start)."""
        if self.future.done():
            return False
        if self.ticket is not None and not self.ticket.start():
            self.future.set_exception(self.ticket.expired_error())
            return False
        return True


class MicroBatcher(Predictor):
    """A Predictor whose `predict` merges concurrent calls into shared model calls."""

    def __init__(
        self,
        loaded: LoadedModel,
        spec: ModelSpec,
        *,
        threads: int,
        metrics: Metrics,
        max_rows: int,
        max_wait_s: float,
    ) -> None:
        super().__init__(loaded, spec, threads=threads, metrics=metrics)
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._slots = threads
        self._busy = 0
        self._concurrency = 1  # the most requests a recent batch held
        self._concurrency_at = 0.0
        self._last_call_s = 0.0  # how long the last model call took
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def predict(
        self, batch: ModelInput, probabilities: bool, *, ticket: Ticket | None = None
    ) -> Prediction:
        """Queue the rows for the next model call and wait for their own predictions. With a
        `ticket`, a request whose deadline passes before its batch forms raises Expired uncomputed."""
        if self._closing:
            raise ModelNotReady("the service is shutting down")
        loop = asyncio.get_running_loop()
        pending = _Pending(batch, probabilities, loop.create_future(), ticket)
        self._queue.append(pending)
        self._queued_rows += batch.n_rows
        if not self._scheduled:
            # Let requests that are already readable in this turn of the loop join the batch.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await pending.future

    def _dispatch(self, waited: bool = False) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue and self._busy < self._slots:
            now = time.perf_counter()
            # Wait for companions only when more are sure to come: other model threads are busy,
            # or a batch in the last second held more requests than are queued now (concurrent
            # clients are sending again). Waiting is capped by max_wait and by the last model
            # call's duration, the most it can save. A lone client never waits. Once the wait's
            # timer has fired, the batch goes: the loop's timers are coarser than a fast model
            # call (uvloop's are whole milliseconds, and a shorter delay runs at the next turn),
            # and re-arming until the clock passes the deadline spun the loop: up to a third of
            # the worker's CPU at 1,000 req/s, single rows arriving apart (py-spy).
            if now - self._concurrency_at > CONCURRENCY_MEMORY_S:
                self._concurrency = 1
            more_coming = self._busy > 0 or len(self._queue) < self._concurrency
            if more_coming and not waited and self._queued_rows < self.max_rows:
                deadline = self._queue[0].queued_at + min(self.max_wait_s, self._last_call_s)
                if deadline > now:
                    self._timer = asyncio.get_running_loop().call_later(deadline - now, self._dispatch, True)
                    return
            items = self._take()
            if not items:  # every request taken had left or expired
                continue
            if len(items) >= self._concurrency:
                self._concurrency, self._concurrency_at = len(items), now
            self._start(items)

    def _take(self) -> list[_Pending]:
        """The next batch: whole requests in arrival order, up to max_rows (one oversized alone).
        A request on the pyfunc path, or for a model whose rows are not exact alone
        (`Predictor.merges_rows`), is never merged: it runs alone. Requests that left the queue
        or whose deadline passed are dropped, not taken."""
        taken: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            item = self._queue[0]
            alone = isinstance(item.batch, PyfuncBatch) or not self.merges_rows
            if taken and (alone or rows + item.batch.n_rows > self.max_rows):
                break
            self._queue.popleft()
            self._queued_rows -= item.batch.n_rows
            if item.dropped(now):
                continue
            taken.append(item)
            rows += item.batch.n_rows
            if alone:
                break
        return taken

    def _start(self, items: list[_Pending]) -> None:
        if self.fast is not None and self._answer_inline(items):
            return
        self._busy += 1
        task = asyncio.get_running_loop().create_task(self._run(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer_inline(self, items: list[_Pending]) -> bool:
        """Answer `items` with the fast path here, on the event loop, when it takes them (a small
        batch of checked rows): no task, no thread, no wake-up of the loop from another thread.
        False when the model must answer them (then they go to a model thread as usual)."""
        live = [p for p in items if not p.future.done()]
        if not live:
            return True
        if isinstance(live[0].batch, PyfuncBatch) or sum(p.batch.n_rows for p in live) > INLINE_MAX_ROWS:
            return False
        merged: ModelInput = (
            live[0].batch if len(live) == 1 else Batch.concat([p.batch for p in live])  # type: ignore[misc]
        )
        started = time.perf_counter()
        result = self.predict_fast(merged, any(p.probabilities for p in live))
        if result is None:
            return False
        self._last_call_s = time.perf_counter() - started
        self._observe(live, started)
        self._answer(live, result)
        return True

    def _observe(self, live: list[_Pending], started: float) -> None:
        labels = self.name, self.version or ""
        self._metrics.batch_size.labels(*labels).observe(sum(p.batch.n_rows for p in live))
        wait = self._metrics.queue_wait.labels(*labels)
        for p in live:
            wait.observe(started - p.queued_at)

    async def _run(self, items: list[_Pending]) -> None:
        live = [p for p in items if p.start()]  # a cancelled or expired request is not computed
        try:
            if not live:
                return
            self._observe(live, time.perf_counter())
            await self._settle(live)
        finally:
            self._busy -= 1
            self._dispatch()

    async def _settle(self, items: list[_Pending]) -> None:
        """Answer `items` from one model call. If the model fails on their merged rows, split them
        in halves and retry each, so a request the model fails on fails alone: the others of its
        batch still get their predictions (a few more model calls, only when the model raises)."""
        live = [p for p in items if not p.future.done()]  # a cancelled request is not computed
        if not live:
            return
        merged: ModelInput = (
            live[0].batch if len(live) == 1 else Batch.concat([p.batch for p in live])  # type: ignore[misc]
        )
        probabilities = any(p.probabilities for p in live)
        started = time.perf_counter()
        try:
            result = await super().predict(merged, probabilities)
            self._last_call_s = time.perf_counter() - started
        except Exception as exc:
            if len(live) > 1:
                half = len(live) // 2
                await self._settle(live[:half])
                await self._settle(live[half:])
                return
            if not live[0].future.done():
                live[0].future.set_exception(_own_copy(exc))
            return
        self._answer(live, result)

    @staticmethod
    def _answer(live: list[_Pending], result: Prediction) -> None:
        """Give each request its own rows of `result` (in order), whole when it is alone."""
        if len(live) == 1:  # its own answer whole (a pyfunc model's output may not be rows)
            if not live[0].future.done():
                own = result if live[0].probabilities else dataclasses.replace(result, probabilities=None)
                live[0].future.set_result(own)
            return
        start = 0
        for p in live:
            stop = start + p.batch.n_rows
            if not p.future.done():
                own = result.slice(start, stop)
                p.future.set_result(own if p.probabilities else Prediction(own.labels))
            start = stop

    async def drain(self) -> None:
        """Refuse new requests, then wait until every queued and running batch has answered."""
        self._closing = True
        while self._queue or self._tasks:
            if self._queue and self._busy < self._slots:
                self._dispatch()
            await asyncio.sleep(0.005)


def _own_copy(exc: Exception) -> ServingError:
    """A fresh error per request of a failed batch, with the model's exception as its cause; an
    input MLflow refused stays the client's error (4xx)."""
    if isinstance(exc, ServingError) and exc.status_code < 500:
        copy: ServingError = type(exc)(exc.message, list(exc.details))
        copy.__cause__ = exc.__cause__
        return copy
    cause = exc.__cause__ if isinstance(exc, ServingError) else exc
    message = exc.message if isinstance(exc, ServingError) else "the model failed on this batch"
    failed = PredictionFailed(message)
    failed.__cause__ = cause
    return failed
