"""Admission control besides the data plane: a request's budget, its place in the queue, its client.

- `budget_s`: the request timeout, shortened per request by the `X-Request-Timeout` header (seconds,
  a decimal number > 0). A budget runs from admission (before the body is read) to the answer.
- `Ticket`: a request waiting for the model. The predictor calls `start()` when the request's rows
  go to the model; past its deadline `start()` refuses, and the request is answered `Expired`
  (504) without costing model time. The ticket keeps the `queue_depth` gauge.
- `watch_disconnect`: once the body is read, the next ASGI `receive()` returns only when the client
  disconnects (or the answer is sent), so one task per waiting request, parked on that call, sees a
  client leave the queue without polling.
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


def start_watching(receive: Receive | None, on_disconnect: Callable[[], None]) -> asyncio.Task[None] | None:
    """A task running `watch_disconnect`, or None without a receive channel."""
    if receive is None:
        return None
    return asyncio.get_running_loop().create_task(watch_disconnect(receive, on_disconnect))
