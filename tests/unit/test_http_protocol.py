"""The coalescing HTTP protocol: a connection's writes in one loop step go out as one, in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from model_api.http_protocol import (
    EARLY_REFUSAL,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
    Pace,
    TurnPacer,
)
from tests.support import free_port, wait_until


class Recording:
    """The parts of an asyncio transport CoalescingTransport calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def test_writes_in_one_loop_step_are_sent_once_and_close_sends_first() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], bool, str]:
        real = Recording()
        transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        during = list(real.writes)  # nothing sent before the loop's next step
        await asyncio.sleep(0)
        transport.write(b"last")
        transport.close()  # closing sends what is gathered first
        transport.write(b"closing")  # a closing transport still sends, as uvicorn's writes do
        await asyncio.sleep(0)
        transport.write(b"gone")
        transport.lost()  # a lost connection drops what is gathered
        await asyncio.sleep(0)
        return during, real.writes, real.closed, transport.get_extra_info("peername")

    during, writes, closed, info = asyncio.run(scenario())
    assert during == []
    assert writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"last", b"closing"]
    assert closed and info == "info peername"


def test_write_now_sends_at_once_after_what_is_gathered() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        real = Recording()
        transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write_now(b"alone")  # nothing gathered: straight out
        transport.write(b"answer 1")
        transport.write_now(b"refusal")  # after the gathered answer, in the same write
        during = list(real.writes)
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        transport.lost()
        transport.write_now(b"gone")
        return during, real.writes

    during, writes = asyncio.run(scenario())
    assert during == [b"alone", b"answer 1refusal"]
    assert writes == during


STARTED: list[str] = []
"""The paths `app` was called with, in order."""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    STARTED.append(scope["path"])
    if scope["path"] == "/block":
        time.sleep(0.5)  # noqa: ASYNC251 - the loop must wait: what arrives meanwhile is read in one turn
    await receive()
    path = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"8")]})
    await send({"type": "http.response.body", "body": path[:4].ljust(4, b"-"), "more_body": True})
    await send({"type": "http.response.body", "body": b"!end"})


def test_a_real_server_answers_pipelined_and_closing_requests_whole_and_in_order() -> None:
    with protocol_server(None) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(
                b"GET /aaaa HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /bbbb HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /cccc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            received = b""
            while chunk := conn.recv(65536):  # the server closes after the third answer
                received += chunk
        bodies = [part.split(b"\r\n\r\n", 1)[1][:8] for part in received.split(b"HTTP/1.1 ")[1:]]
        assert bodies == [b"/aaa!end", b"/bbb!end", b"/ccc!end"]
        # A client that half-closes after its request (nc -N, some TCP health checkers) still
        # gets its answer, though the server sees the end of its stream before it answers.
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"GET /dddd HTTP/1.1\r\nHost: x\r\n\r\n")
                conn.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := conn.recv(65536):
                    received += chunk
            assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"/ddd!end"), received


class RefuseAll:
    """A `Refusal` that refuses every POST with a fixed answer and records what it is offered."""

    ANSWER = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\n\r\nrefused!"

    def __init__(self, answer: bytes = ANSWER) -> None:
        self.refused = answer
        self.offered: list[tuple[bytes, bytes]] = []

    def answer(
        self,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        root_path: str,
        default_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> bytes | None:
        self.offered.append((method, url))
        if method != b"POST":
            return None
        return (
            self.refused
            if keep_alive
            else self.refused.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
        )

    def pacer(self, method: bytes, url: bytes, root_path: str) -> TurnPacer | None:
        return None


class Holder:
    """Counts what a `TurnPacer` holds, as the data plane does, and the most it held at once."""

    def __init__(self) -> None:
        self.held = self.most = self.dropped = 0

    def hold(self) -> None:
        self.held += 1
        self.most = max(self.most, self.held)

    def unhold(self) -> None:
        self.held -= 1

    def drop_held(self) -> None:
        self.unhold()
        self.dropped += 1


class PaceAll(RefuseAll):
    """Refuses nothing; every request starts through one pacer of one request a loop turn."""

    def __init__(self) -> None:
        super().__init__()
        self.holder = Holder()
        self.paced = TurnPacer(1, self.holder)

    def answer(self, *args: Any) -> bytes | None:
        return None

    def pacer(self, method: bytes, url: bytes, root_path: str) -> TurnPacer | None:
        return self.paced


def refusing_app(refusal: RefuseAll | None) -> Any:
    """`app`, with a lifespan that hands the protocol `refusal` as the edge layer does (None: none)."""

    async def with_refusal(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # startup
            if refusal is not None:
                scope["state"][EARLY_REFUSAL] = refusal
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)

    return with_refusal


@contextmanager
def protocol_server(refusal: RefuseAll | None, **config: Any) -> Iterator[tuple[uvicorn.Server, int]]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            refusing_app(refusal),
            host="127.0.0.1",
            port=port,
            http=CoalescingHttpToolsProtocol,
            lifespan="on",
            log_level="warning",
            **config,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30, "the server to start")
        assert server.started
        yield server, port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_after_a_refusal_that_closes_nothing_the_client_sent_behind_it_is_answered() -> None:
    """HTTP/1.0 with keep-alive: the parser keeps going, but the server closes after the answer
    (uvicorn's rule), so the requests pipelined behind it are neither refused (counted) nor run."""
    refusal = RefuseAll()
    with (
        protocol_server(refusal) as (_, port),
        socket.create_connection(("127.0.0.1", port), timeout=10) as conn,
    ):
        conn.sendall(
            b"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            b"GET /cccc HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = b""
        while chunk := conn.recv(65536):  # the server closes after the first answer
            received += chunk
    assert received == RefuseAll.ANSWER.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    assert refusal.offered == [(b"POST", b"/a")]


def test_an_idle_connection_is_closed_after_a_refused_requests_body_arrives() -> None:
    """The body of a refused request that arrives after its answer cancels the keep-alive timeout
    (any data does); once it is read, the idle connection is timed out again, not held forever."""
    refusal = RefuseAll()
    with (
        protocol_server(refusal, timeout_keep_alive=1) as (_, port),
        socket.create_connection(("127.0.0.1", port), timeout=20) as conn,
    ):
        conn.sendall(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        received = b""
        while len(received) < len(RefuseAll.ANSWER):  # answered before the body is sent
            received += conn.recv(65536)
        conn.sendall(b"{}{}")
        closed = conn.recv(65536)  # times out (fails) if the server never closes
    assert received == RefuseAll.ANSWER
    assert closed == b""


def test_a_client_that_does_not_read_its_refusals_is_not_read_either() -> None:
    """Refusals are written as the requests are parsed, outside uvicorn's flow control: a client
    pipelining small refused requests without reading the (larger) answers had the server read
    all it sent and buffer every answer (1 GB of memory for 100 MB sent). Once the answers back up,
    the server stops reading the client until it reads them."""
    refusal = RefuseAll(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000\r\n\r\n" + b"x" * 1000)
    requests = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" * 1000
    with (
        protocol_server(refusal, timeout_keep_alive=60) as (server, port),
        socket.create_connection(("127.0.0.1", port), timeout=2) as conn,
    ):
        sent = 0
        try:
            while sent < 4_000_000:  # 75,000 requests, 75 MB of answers
                conn.sendall(requests)
                sent += len(requests)
        except TimeoutError:
            pass  # the server stopped reading
        (protocol,) = server.server_state.connections
        assert isinstance(protocol, CoalescingHttpToolsProtocol)
        wait_until(lambda: protocol.flow.read_paused, 20, "the server to stop reading the client")
        buffered = protocol.transport.get_write_buffer_size()
        answered_then = len(refusal.offered)
        # Once the client reads, the server reads again: every request is answered.
        expected = sent // (len(requests) // 1000) * len(refusal.refused)
        received = 0
        while received < expected:
            received += len(conn.recv(1 << 20))
    # What was read before the answers backed up is answered: a read's worth at most (256 KiB).
    assert buffered < 8_000_000, buffered
    assert answered_then * len(requests) // 1000 < sent
    assert received == expected and len(refusal.offered) == sent // (len(requests) // 1000)


def test_a_client_pipelining_without_reading_is_read_no_further_than_its_queue() -> None:
    """uvicorn queues a request that arrives while another is answered, pauses reading, and reads
    again as soon as an answer completes or a request reads its body: each answer let one more
    read's worth of requests in, so a client pipelining without reading its answers had the server
    queue all it sent (128,000 requests, ~400 MB, for 4 MB sent). Reading resumes once the queue
    is empty: at most one read's worth (256 KiB, here 8,500 requests) waits."""
    requests = b"GET /aaaa HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    per_request = len(requests) // 1000
    with (
        protocol_server(RefuseAll(), timeout_keep_alive=60) as (server, port),
        socket.create_connection(("127.0.0.1", port), timeout=5) as conn,
    ):
        sent = 0
        try:
            while sent < 2_000_000:  # 64,000 requests
                conn.sendall(requests)
                sent += len(requests)
        except TimeoutError:
            pass  # the server stopped reading
        received = b""
        while received.count(b"!end") < 50:  # 50 answers: the server has read 50 times since
            received += conn.recv(65536)
        (protocol,) = server.server_state.connections
        assert isinstance(protocol, CoalescingHttpToolsProtocol)
        queued = len(protocol.pipeline)
        answer = received.index(b"!end") + 4  # every answer is as long (Date's format is fixed)
        while len(received) < answer * (sent // per_request):  # every request is answered
            received += conn.recv(1 << 20)
    assert queued < 10_000, queued
    assert received.count(b"/aaa!end") == sent // per_request


def test_paced_requests_start_one_a_turn_in_order_and_all_are_answered() -> None:
    """While the app blocks the loop, four requests arrive on four connections: the next turn reads
    them all and holds them (counted), then the pacer starts one a turn, in arrival order."""
    refusal = PaceAll()
    with protocol_server(refusal) as (_, port):
        blocker = socket.create_connection(("127.0.0.1", port), timeout=10)
        others = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.2)  # every connection accepted
            blocker.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)  # the app is blocking the loop now
            for i, conn in enumerate(others):
                conn.sendall(b"GET /%d%d%d%d HTTP/1.1\r\nHost: x\r\n\r\n" % ((i,) * 4))
                time.sleep(0.01)  # in this order
            answers = [read_answer(conn) for conn in [blocker, *others]]
        finally:
            for conn in [blocker, *others]:
                conn.close()
    assert [a[-8:] for a in answers] == [b"/blo!end", b"/000!end", b"/111!end", b"/222!end", b"/333!end"]
    assert refusal.holder.most == 4 and refusal.holder.held == 0 and refusal.holder.dropped == 0
    assert STARTED[-4:] == ["/0000", "/1111", "/2222", "/3333"]


def read_answer(conn: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"!end"):
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection before answering"
        received += chunk
    return received


def test_a_held_request_whose_client_left_is_dropped_not_started() -> None:
    class Cycle:
        disconnected = False

    async def scenario() -> tuple[list[str], Holder]:
        holder = Holder()
        pacer = TurnPacer(1, holder)
        begun: list[str] = []
        tasks: list[asyncio.Task[None]] = []

        def begin(name: str) -> Any:
            def start(asgi: Any) -> None:  # as uvicorn does: a task running the app
                begun.append(name)
                tasks.append(asyncio.ensure_future(asgi({"type": "lifespan"}, None, None)))

            return start

        cycles = [Cycle() for _ in range(3)]
        for name, cycle in zip("abc", cycles, strict=True):
            pacer.start(begin(name), app, lambda cycle=cycle: cycle.disconnected)  # type: ignore[misc]
        cycles[1].disconnected = True  # b's client leaves while it waits
        for _ in range(4):
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return begun, holder

    begun, holder = asyncio.run(scenario())
    assert begun == ["a", "c"]
    assert holder.most == 3 and holder.held == 0 and holder.dropped == 1


def test_the_pace_falls_by_a_quarter_on_a_long_turn_and_climbs_by_one_on_a_short_one() -> None:
    pace = Pace(16, target_s=0.003)
    assert pace.per_turn == 16
    for expected in (12, 9, 6, 5, 3, 2, 2, 1, 1, 1):
        pace.after_turn(0.010)
        assert pace.per_turn == expected
    for expected in (2, 3, 4):
        pace.after_turn(0.001)
        assert pace.per_turn == expected
    pace.after_turn(0.003)  # on the target: within it
    assert pace.per_turn == 5
    for _ in range(40):
        pace.after_turn(0.0)
    assert pace.per_turn == 16  # never above the most
    fixed = Pace(16, target_s=0.0)
    fixed.after_turn(10.0)
    assert fixed.per_turn == 16


def test_the_pace_never_falls_below_its_floor_and_climbs_back_from_it() -> None:
    pace = Pace(16, target_s=0.003, least=4)
    for expected in (12, 9, 6, 5, 4, 4, 4):
        pace.after_turn(0.010)
        assert pace.per_turn == expected
    pace.after_turn(0.001)
    assert pace.per_turn == 5  # from the floor, not from where the cuts would have gone
    assert Pace(2, target_s=0.003, least=4).least == 2  # a floor above the most is the most


def test_the_pacer_measures_each_turn_and_starts_what_the_pace_allows() -> None:
    """Every turn takes 10 ms by the pacer's clock against a target of 3 ms: the turns start 8
    requests, then 6, 4, 3, 2, 1, 1 (a quarter less each time), in arrival order; the first turn
    has no previous one to measure."""

    async def scenario() -> list[int]:
        holder = Holder()
        ticks = iter(range(1000))
        pacer = TurnPacer(Pace(8, target_s=0.003), holder, clock=lambda: next(ticks) * 0.010)
        begun: list[int] = []
        for i in range(25):
            pacer.start(lambda asgi, i=i: begun.append(i), app, lambda: False)  # type: ignore[misc]
        per_turn = []
        while len(begun) < 25:
            before = len(begun)
            await asyncio.sleep(0)
            per_turn.append(len(begun) - before)
        assert begun == list(range(25))
        assert holder.held == 25  # never handed to an app here: still counted
        return per_turn

    assert asyncio.run(scenario()) == [8, 6, 4, 3, 2, 1, 1]


def test_only_turns_after_which_requests_still_wait_are_measured() -> None:
    """Every turn takes 20 ms by the pacer's clock against a target of 5 ms. While 10 requests
    arrive a turn, under the pace of 16, each turn starts all that waits and the pace holds (it
    holds nothing back); once 30 arrive a turn, requests queue, the turns are measured and the
    pace falls to its floor of 4."""

    async def scenario(arrivals: int) -> tuple[list[int], int]:
        holder = Holder()
        ticks = iter(range(10_000))
        pacer = TurnPacer(Pace(16, target_s=0.005, least=4), holder, clock=lambda: next(ticks) * 0.020)
        begun: list[int] = []
        per_turn = []
        for _ in range(12):
            for i in range(arrivals):
                pacer.start(lambda asgi, i=i: begun.append(i), app, lambda: False)  # type: ignore[misc]
            before = len(begun)
            await asyncio.sleep(0)
            per_turn.append(len(begun) - before)
        return per_turn, pacer.pace.per_turn

    per_turn, pace = asyncio.run(scenario(10))
    assert pace == 16 and per_turn == [10] * 12
    per_turn, pace = asyncio.run(scenario(30))
    assert pace == 4
    assert per_turn[0] == 16 and per_turn[-1] == 4
