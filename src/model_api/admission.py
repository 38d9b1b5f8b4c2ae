"""Admission control besides the data plane: a request's budget, its place in the queue, its client.

- `budget_s`: the request timeout, shortened per request by the `X-Request-Timeout` header (seconds,
  a decimal number > 0). A budget runs from admission (before the body is read) to the answer.
- `Ticket`: a request waiting for the model. The predictor calls `start()` when the request's rows
  go to the model; past its deadline `start()` refuses, and the request is answered `Expired`
  (504) without costing model time. The ticket keeps the `queue_depth` gauge.
- `watch_disconnect`: once the body is read, the next ASGI `receive()` returns only when the client
  disconnects (or the answer is sent), so one task per waiting request, parked on that call, sees a
  client leave the queue without polling. `DisconnectWatch` starts it only for a request still
  waiting after `WATCH_AFTER_S` (50 ms): most are answered sooner and never pay for the task.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

from prometheus_client import Gauge

from model_api.errors import BadRequest, Expired

TIMEOUT_HEADER = "x-request-timeout"
"""Request header that shortens a request's budget: seconds, e.g. `X-Request-Timeout: 0.5`."""

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class Client(Protocol):
    """The parts of an HTTP request admission reads (a Starlette `Request` is one)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def receive(self) -> Receive: ...


def budget_s(header: str | None, timeout_s: float) -> float:
    """The request's budget in seconds: `timeout_s`, or the header's value when it is shorter.

    Raises BadRequest (400) for a header that is not a positive finite number of seconds."""
    if header is None:
        return timeout_s
    try:
        asked = float(header)
    except ValueError:
        asked = math.nan
    if not (asked > 0 and math.isfinite(asked)):
        raise BadRequest(f"the {TIMEOUT_HEADER} header must be a positive number of seconds, like 0.5")
    return min(asked, timeout_s)


class Ticket:
    """A request in the queue for the model, from the data plane's `infer` until its rows go to the
    model (`start`) or it leaves the queue unanswered (`leave`). Times are `time.monotonic()`."""

    __slots__ = ("_depth", "_lock", "_queued", "budget_s", "deadline", "started")

    def __init__(self, deadline: float, budget_s: float, depth: Gauge) -> None:
        self.deadline = deadline
        self.budget_s = budget_s
        self.started = False
        """Whether the request reached the model (set by `start`, in a model thread or the loop)."""
        self._depth = depth
        self._lock = threading.Lock()
        self._queued = True
        depth.inc()

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def start(self) -> bool:
        """The request's turn has come: True if its rows may go to the model, False past its deadline
        (then answer it with `expired_error()`). Safe from a model thread."""
        self.leave()
        if time.monotonic() >= self.deadline:
            return False
        self.started = True
        return True

    def leave(self) -> None:
        """The request is no longer waiting (once; later calls do nothing)."""
        with self._lock:
            queued, self._queued = self._queued, False
        if queued:
            self._depth.dec()

    def expired_error(self) -> Expired:
        return Expired(
            f"the request reached its {self.budget_s:g}s timeout while it waited for the model; "
            "it was not computed"
        )


async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Wait (without polling) for the client to disconnect, then call `on_disconnect`.

    Call only once the request body is read: a body message received here would be lost. The
    server also sends `http.disconnect` once the answer is complete; cancel this task before."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # the receive channel failed: nothing to watch
        return
    on_disconnect()


WATCH_AFTER_S = 0.05
"""How long a request waits for the model before its client is watched: most requests are answered
sooner, and a watch costs a task (a few loop steps); a client gone sooner is dropped at this mark."""


class DisconnectWatch:
    """`watch_disconnect` in a task started `after_s` seconds from now, unless cancelled before."""

    __slots__ = ("_handle", "_task")

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None], after_s: float = WATCH_AFTER_S):
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(after_s, self._start, receive, on_disconnect)

    def _start(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self._task = asyncio.get_running_loop().create_task(watch_disconnect(receive, on_disconnect))

    def cancel(self) -> None:
        """Stop watching (the answer is ready, or the request left the queue)."""
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


class LoopLag:
    """How late the event loop runs a periodic timer: past `limit_s`, the worker's core is saturated.

    A bound on requests in flight does not bound CPU: when requests are cheap, the worker can
    hold fewer than its bound and still have more work than its core, and then new requests wait
    unread in the socket buffers, where admission cannot see them. The loop's lag is the sign of
    that: while it is past the limit the data plane refuses new prediction requests (cheaply)
    until the core catches up. One timer per worker, every `interval_s`; each lag (seconds, 0 or
    more) also goes to `observe` (the `event_loop_lag_seconds` histogram), so an operator sees a
    saturated core, a long callback or a collector pause whether the check is on or not."""

    def __init__(
        self, interval_s: float, limit_s: float, observe: Callable[[float], None] | None = None
    ) -> None:
        self.interval_s = interval_s
        self.limit_s = limit_s
        self.observe = observe
        self.lag_s = 0.0
        """The last measured lag, in seconds."""
        self.lagging = False

    async def run(self) -> None:
        """Measure until cancelled. With the check off and nothing observing (a caller that wants
        neither), return at once: no timer at all."""
        if self.limit_s <= 0 and self.observe is None:
            return
        while True:
            expected = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            # uvloop's timers have a millisecond's grain: one may fire a little early.
            self.lag_s = max(0.0, time.monotonic() - expected)
            self.lagging = self.limit_s > 0 and self.lag_s > self.limit_s
            if self.observe is not None:
                self.observe(self.lag_s)
