"""uvicorn's httptools protocol, writing each connection's bytes once per event-loop iteration.

uvicorn writes a response in two `transport.write` calls (the status line and headers, then the
body), and uvloop sends each at once: two `send` system calls per answer. On this project's
machines a system call is dear: a server answering single-row predictions at 64 connections
spent 12% of its CPU in those writes (py-spy), and joining them raised its throughput by 18-36%
(wrk, one worker on one core, demo model on the fast path). `CoalescingHttpToolsProtocol` hands
uvicorn's protocol a transport that gathers a connection's writes and sends them in one call at
the end of the current loop iteration; a single client waits one loop step more for its answer
(~60 us, measured).

It also answers admission control's refusals itself: when the app's lifespan state holds a
`Refusal` under `EARLY_REFUSAL` (the edge layer puts one there), a request is offered to it as
soon as its headers are parsed, and a refused one is answered there and then, with no ASGI task,
scope or app call (`middleware/admission.py`), and sent at once rather than after the loop's other
callbacks; its body is read and dropped as it arrives, and the connection serves the next
request. A request that arrives while another on the same connection is being answered
(pipelining), or asks for `100-continue`, goes to the app as any other, whose edge layer refuses it
the same way. A client that does not read its answers is not read either: refusals stop the
reading while the transport's buffer is full, and requests queued behind another (pipelined) keep
it stopped until they have started (`QueueFlowControl`). Everything else is uvicorn's own;
`model-api serve` selects it (`cli.py`).

While the worker sheds, it paces the starts of admitted prediction requests (`TurnPacer`): a
refusal is answered when the event loop next reads its socket, after the callbacks of its current
turn, and under a spike those are the admitted requests' work, so the fewer requests a turn
starts, the sooner refusals are answered; how many a turn starts adapts to how long turns take
(`Pace`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sized
from typing import TYPE_CHECKING, Any, Protocol

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

App = Callable[[Any, Any, Any], Awaitable[None]]
"""An ASGI application (uvicorn's own type for it is private)."""

EARLY_REFUSAL = "model_api.early_refusal"
"""The key of the lifespan state under which the app hands the protocol its `Refusal`."""


class Refusal(Protocol):
    """What the protocol asks before it starts a request (`middleware/admission.EarlyRefusal`)."""

    def answer(
        self,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        root_path: str,
        default_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> bytes | None:
        """The whole HTTP answer refusing the request, or None to serve it."""

    def pacer(self, method: bytes, url: bytes, root_path: str) -> TurnPacer | None:
        """The pacer a request `answer` did not refuse starts through, or None to start it now."""


class Holder(Protocol):
    """Counts the requests a `TurnPacer` holds as admitted (the data plane)."""

    def hold(self) -> None:
        """One more request held."""

    def unhold(self) -> None:
        """A held request reaches the app: from now on the app's admission counts it."""

    def drop_held(self) -> None:
        """A held request's client left before it started: it never will."""


class Pace:
    """How many paced requests a turn of the event loop starts, adapted to how long turns take:
    additive increase, multiplicative decrease (AIMD), as TCP adapts its window to loss and
    Netflix's concurrency limiters and Envoy's adaptive concurrency adapt to latency. A turn longer
    than `target_s` cuts the pace by a quarter (never below `least`); a turn within it adds one
    (never above `most`). Starts at `most`. Pure: `after_turn` is given each turn's length in
    seconds. The floor matters: a turn also answers the refusals, which no pace shortens, and on a
    slow machine a target under what they take alone drove a pace without one down to 1 a turn
    (552 and 982 admitted req/s at a 3 ms target, against 928-1,989 at a fixed pace; see the
    README's Overload section). The owner calls `restart` once a spike is over."""

    DECREASE = 0.75

    def __init__(self, most: int, target_s: float, least: int = 1) -> None:
        self.most = most
        self.least = max(1, min(least, most))
        self.target_s = target_s
        self._pace = float(most)

    @property
    def per_turn(self) -> int:
        return max(self.least, int(self._pace))

    def restart(self) -> None:
        """Back to `most`: a spike is over, and the next one starts from the full pace."""
        self._pace = float(self.most)

    def after_turn(self, length_s: float) -> None:
        if self.target_s <= 0:  # adapting is off: always `most`
            return
        if length_s > self.target_s:
            self._pace = max(float(self.least), self._pace * self.DECREASE)
        else:
            self._pace = min(float(self.most), self._pace + 1.0)


class TurnPacer:
    """Starts the requests it is given at most `pace.per_turn` per turn of the event loop, in order:
    each waits at least until the loop runs the pacer's callback, which starts the first
    `pace.per_turn` waiting (their tasks take their first step in the next turn) and runs again in
    the next turn while some wait. Every request is counted by the `holder` from `start` until its
    task hands it to the app's admission, so that the bound sees it meanwhile. While requests wait,
    the callback runs once a turn, so the time between two runs is a turn's length: the `pace`
    adapts to it (`Pace`); `per_turn` alone is a fixed pace. Only turns after which requests still
    wait are measured: while each turn starts all that waits, the pace holds nothing back and
    stays where it is (measuring those turns too cut the admitted req/s of `make overload` by a
    third, for no shorter refusals). A gap in which the callback did not run is never measured."""

    def __init__(
        self, per_turn: int | Pace, holder: Holder, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.pace = per_turn if isinstance(per_turn, Pace) else Pace(per_turn, 0.0)
        self.holder = holder
        self._clock = clock
        self._waiting: deque[tuple[Callable[[App], None], App, Callable[[], bool]]] = deque()
        self._armed = False
        self._last_turn: float | None = None
        """When the callback last ran, while it runs every turn (else None)."""

    @property
    def holding(self) -> bool:
        return bool(self._waiting)

    def start(self, begin: Callable[[App], None], app: App, gone: Callable[[], bool]) -> None:
        """Call `begin` with `app` (which, when it runs, first stops counting the request as held)
        when the pacer's callback gets to the request, unless `gone()` says by then that its client
        left (then it is dropped)."""
        self.holder.hold()
        self._waiting.append((begin, app, gone))
        self._arm()

    def _arm(self) -> None:
        """Have the loop run `_turn` (once, however many requests come before it does)."""
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self._armed = False
        now = self._clock()
        if self._last_turn is not None:
            self.pace.after_turn(now - self._last_turn)
        per_turn = self.pace.per_turn
        started = 0
        while self._waiting and started < per_turn:
            begin, app, gone = self._waiting.popleft()
            if gone():  # its client left while it waited
                self.holder.drop_held()
                continue
            started += 1
            begin(self._handed_over(app))
        if self._waiting:
            self._arm()
            self._last_turn = now
        else:
            self._last_turn = None

    def _handed_over(self, app: App) -> App:
        """`app`, which first stops counting the request as held: the app's admission counts it next,
        in the same step of the task (no turn of the loop, so no other request, in between)."""
        unhold = self.holder.unhold

        async def run(scope: Any, receive: Any, send: Any) -> None:
            unhold()
            await app(scope, receive, send)

        return run


class _NoWaiter:
    def set(self) -> None:
        """Nothing waits on a request answered by the protocol."""


class AnsweredCycle:
    """Stands in for uvicorn's request cycle while a refused request's body arrives: complete, so
    uvicorn's parser callbacks drop the body, and with nothing to wake when the connection ends."""

    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NoWaiter()


class CoalescingTransport:
    """A transport whose `write`s are joined and sent once, in a callback the loop runs after
    the current ones; `close` sends what is gathered first. Every other call goes to the real
    transport (uvicorn's flow control keeps the real one, so pausing reads is not delayed).

    Once the client has ended its side (`write_through`: `nc -N`, some TCP health checkers), the
    transport closes as soon as the loop gets to it, so writes go straight through from then on,
    as uvicorn's do, and the answer leaves before the close. A lost connection drops what is
    gathered (`lost`)."""

    __slots__ = ("_loop", "_lost", "_pending", "_through", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._lost = False
        self._through = False

    def write_through(self) -> None:
        """From now on, write at once (what is gathered first)."""
        self._through = True
        self.flush()

    def write_now(self, data: bytes) -> None:
        """Send `data` at once, after what is gathered (a refusal need not wait for the loop's
        other callbacks: under a spike they are the admitted requests' work, milliseconds of it)."""
        if self._pending:
            self._pending.append(data)
            self.flush()
        elif not self._lost:
            self._transport.write(data)

    def write(self, data: bytes) -> None:
        if self._through:
            if not self._lost:
                self._transport.write(data)
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what was written since the last flush, in one write (nothing once lost)."""
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._lost:
            self._transport.write(data)

    def lost(self) -> None:
        """The connection is gone: what is gathered is dropped, as uvicorn drops its writes then."""
        self._lost = True
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """The real transport's (asked several times a request: spelled out, not forwarded)."""
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class QueueFlowControl(FlowControl):
    """uvicorn's flow control, which reads a connection again only once no request of it waits
    in the protocol's queue (`pipeline`).

    uvicorn pauses reading when a request arrives while another is answered, but resumes as soon
    as an answer completes or a request reads its body, queued requests or not: each answer let
    in another read's worth of requests, and a client pipelining without reading its answers had
    all it sent queued (4 MB of small requests: 128,000 of them, ~400 MB). A queued request's body
    has been read (the parser read past it), but the last one's: it is the last to start, and
    reading resumes when it reads its body or completes."""

    def __init__(self, transport: asyncio.Transport, queue: Sized) -> None:
        super().__init__(transport)
        self._queue = queue

    def resume_reading(self) -> None:
        if not self._queue:
            super().resume_reading()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol with a `CoalescingTransport` under its request cycles, which
    answers the app's early refusals itself."""

    _coalescing: CoalescingTransport
    """The transport under the request cycles (set when the connection is made)."""
    _pace: TurnPacer | None = None
    """The pacer the request whose headers were just parsed starts through, if any."""

    def on_headers_complete(self) -> None:
        if isinstance(self.cycle, AnsweredCycle) and self.transport.is_closing():
            # A refusal closed the connection (HTTP/1.0 with keep-alive, which the parser keeps
            # parsing): what the client sent after it is neither answered nor counted, as uvicorn
            # never starts a request pipelined behind one that closes.
            return
        refusal: Refusal | None = self.app_state.get(EARLY_REFUSAL)
        if (
            refusal is not None
            and (self.cycle is None or self.cycle.response_complete)
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
        ):
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            answer = refusal.answer(
                self.parser.get_method(),
                self.url,
                self.headers,
                self.root_path,
                self.server_state.default_headers,
                keep_alive,
            )
            if answer is not None:
                self.cycle = AnsweredCycle()  # type: ignore[assignment]
                self._coalescing.write_now(answer)
                if not keep_alive:
                    self.transport.close()
                self.on_response_complete()  # counts it, arms the keep-alive timeout
                if self.flow.write_paused:
                    # The client does not read its answers: read no more of what it sends until
                    # it does (uvicorn's flow control, which the refusal bypasses; what was read
                    # already is answered, up to one read's worth).
                    self.flow.pause_reading()
                return
            self._pace = refusal.pacer(self.parser.get_method(), self.url, self.root_path)
        try:
            super().on_headers_complete()
        finally:
            self._pace = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        pacer = self._pace
        if pacer is None:  # not paced, or a pipelined request started as the one before completes
            super()._start_asgi_task(cycle, app)
            return
        self._pace = None
        begin = super()._start_asgi_task
        pacer.start(lambda paced: begin(cycle, paced), app, lambda: cycle.disconnected)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Data cancels the keep-alive timeout, which uvicorn arms again when an answer completes:
        # a refused request's body, arriving after its answer, would leave the idle connection
        # open for good. Unless another request has started, the connection is idle again.
        if (
            isinstance(self.cycle, AnsweredCycle)
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
            and not self.parser.should_upgrade()
        ):
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if isinstance(self.cycle, AnsweredCycle) and not self.transport.is_closing():
            self.flow.resume_reading()  # the client read its refusals: read it again

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = QueueFlowControl(transport, self.pipeline)
        self._coalescing = CoalescingTransport(transport, self.loop)
        self.transport = self._coalescing  # type: ignore[assignment]

    def eof_received(self) -> None:
        self._coalescing.write_through()
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._coalescing.lost()
        super().connection_lost(exc)
