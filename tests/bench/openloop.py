"""An open-loop HTTP/1.1 load generator: requests leave on a fixed schedule whatever the answers.

wrk and locust are closed-loop (a connection sends its next request only after the last answer), so
a slow server slows its own load and overload never shows. Here request i of a phase at R req/s is
due at ``start + i / R``; it goes out on an idle keep-alive connection or, when none is idle, on a new
one, so the server sees every request when it is due and the number of open connections grows with
the server's latency. 512 connections are opened before the first request (a pool used in turn,
so none idles into the server's keep-alive timeout), and at most 256 connects are under way at
once: past that a due request waits for the first connection freed, since a connect costs more
than a request and a storm of them would slow the generator itself. Latency is counted from the due
time (no coordinated omission), so time spent connecting or waiting for a connection shows as
latency, and ``lag`` reports how late the scheduler itself handled each request (the generator's
own health: it should stay within a few ms).

Each request has a client timeout (10 s by default): past it the connection is closed and the request
counted as timed out (status 0). A refused connection or a reset counts as an error (status -1). The
open connections are capped (``--max-connections``, within the file limit and the ephemeral ports): a
request due while the cap is reached and no connection is idle is not sent (status -2), and counted.

Run as ``python -m tests.bench.openloop --url URL --body FILE --phase RATE:SECONDS ... --out FILE``;
pin it with taskset. The result file is a numpy ``.npz`` with one row per request, in due order:
``due`` (s from the run's start), ``latency`` (s; NaN if none), ``status`` (HTTP status, 0 timeout,
-1 connection error, -2 not sent), ``lag`` (s between the due time and the scheduler handling
it), ``phases`` (rate, seconds) rows and ``peak_connections``. On one core (uvloop, httptools) it
sends 15k req/s with a p99 lag of 6 ms against a trivial server; 20k req/s falls behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import httptools
import numpy as np

TICK_S = 0.001
"""The scheduler wakes this often and sends every request that has come due."""
MAX_CONNECTING = 256
"""Connects under way at once; past it a due request waits for the first connection free (its lag
shows it). Without a bound, a hiccup that leaves no idle connection makes every request open one,
which costs more than the request and feeds the hiccup."""


PENDING = -3
"""Status of a request not yet answered, timed out or failed."""


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; answers are parsed by httptools."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.index = -1

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.finish(-1, reuse=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.index >= 0:
            self.finish(-1, reuse=False)
        self.client.forget(self)

    # httptools callback
    def on_message_complete(self) -> None:
        self.finish(self.parser.get_status_code(), reuse=self.parser.should_keep_alive())

    # ours
    def send(self, index: int) -> None:
        assert self.transport is not None
        self.index = index
        self.transport.write(self.client.request)

    def finish(self, status: int, *, reuse: bool) -> None:
        index, self.index = self.index, -1
        if index < 0:
            return
        self.client.record(index, status)
        if self.transport is None:
            return
        if reuse:
            self.client.release(self)
        else:
            self.transport.abort()


class Client:
    """Sends the schedule, holds the connection pool and the per-request results."""

    def __init__(
        self, url: str, body: bytes, rates: list[tuple[float, float]], timeout_s: float, max_connections: int
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        dues: list[np.ndarray] = []
        offset = 0.0
        for rate, seconds in rates:
            dues.append(offset + np.arange(int(rate * seconds)) / rate)
            offset += seconds
        self.due = np.concatenate(dues) if dues else np.zeros(0)
        n = len(self.due)
        self.latency = np.full(n, np.nan)
        self.status = np.full(n, PENDING, dtype=np.int32)
        self.lag = np.zeros(n)
        self.owner: list[Connection | None] = [None] * n
        self.deadlines: deque[int] = deque()  # indices in dispatch order, so in deadline order
        self.done = 0
        self.idle: deque[Connection] = deque()
        self.waiting: deque[int] = deque()  # due, no idle connection, too many connects under way
        self.open: set[Connection] = set()
        self.connecting = 0
        self.peak_connections = 0
        self.connect_errors = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.t0 = time.perf_counter()
        self.finished = self.loop.create_future()

    def due_abs(self, index: int) -> float:
        return self.t0 + float(self.due[index])

    def record(self, index: int, status: int) -> None:
        if self.status[index] != PENDING:
            return
        if status > 0:
            self.latency[index] = time.perf_counter() - self.due_abs(index)
        self.status[index] = status
        self.owner[index] = None
        self.done += 1
        if self.done == len(self.due) and not self.finished.done():
            self.finished.set_result(None)

    def release(self, conn: Connection) -> None:
        while self.waiting:
            index = self.waiting.popleft()
            if self.status[index] == PENDING:
                self.owner[index] = conn
                conn.send(index)
                return
        self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        self.open.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def dispatch(self, index: int) -> None:
        self.lag[index] = time.perf_counter() - self.due_abs(index)
        self.deadlines.append(index)
        while self.idle:
            conn = self.idle.popleft()  # the least recently used: every pooled one stays warm
            if conn.transport is not None and not conn.transport.is_closing():
                self.owner[index] = conn
                conn.send(index)
                return
        if len(self.open) + self.connecting >= self.max_connections:
            self.record(index, -2)
        elif self.connecting >= MAX_CONNECTING:
            self.waiting.append(index)  # the first connection freed or made takes it
        else:
            self.connect(index)

    def connect(self, index: int | None) -> None:
        self.connecting += 1
        task = self.loop.create_task(self.connect_and_send(index))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect_and_send(self, index: int | None) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.connect_errors += 1
            if index is not None:
                self.record(index, -1)
            return
        finally:
            self.connecting -= 1
        if conn.transport is None:  # reset before it could carry anything
            if index is not None:
                self.record(index, -1)
            return
        self.open.add(conn)
        self.peak_connections = max(self.peak_connections, len(self.open))
        if index is None or self.status[index] != PENDING:  # a warm-up one, or its request timed out
            self.release(conn)
        elif self.waiting and self.status[self.waiting[0]] == PENDING and self.waiting[0] < index:
            self.waiting.append(index)
            self.release(conn)
        else:
            self.owner[index] = conn
            conn.send(index)

    def expire(self) -> None:
        """Time out every request past its deadline: O(1) a request, no timer each."""
        now = time.perf_counter() - self.t0 - self.timeout_s
        while self.deadlines and self.due[self.deadlines[0]] <= now:
            index = self.deadlines.popleft()
            if self.status[index] != PENDING:
                continue
            conn = self.owner[index]
            self.record(index, 0)
            if conn is not None and conn.index == index:
                conn.index = -1
                if conn.transport is not None:
                    conn.transport.abort()

    async def warm(self, connections: int) -> None:
        for _ in range(connections):
            self.connect(None)
        await asyncio.gather(*self.tasks)
        self.t0 = time.perf_counter()

    async def run(self) -> None:
        sent, n = 0, len(self.due)
        while sent < n:
            now = time.perf_counter() - self.t0
            due_now = int(np.searchsorted(self.due, now, side="right"))
            for i in range(sent, due_now):
                self.dispatch(i)
            sent = max(sent, due_now)
            self.expire()
            await asyncio.sleep(TICK_S)
        while n and not self.finished.done():
            self.expire()
            await asyncio.sleep(0.01)
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.close()


def parse_phase(text: str) -> tuple[float, float]:
    rate, _, seconds = text.partition(":")
    return float(rate), float(seconds)


def run(
    url: str,
    body: bytes,
    phases: list[tuple[float, float]],
    timeout_s: float = 10.0,
    max_connections: int = 15_000,
    warm: int = 512,
) -> dict[str, np.ndarray]:
    """Send the phases back to back; return the per-request arrays (see the module docstring)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < max_connections + 100 <= hard or (
        hard == resource.RLIM_INFINITY and soft < max_connections + 100
    ):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_connections + 100, hard))

    async def go() -> dict[str, np.ndarray]:
        client = Client(url, body, phases, timeout_s, max_connections)
        await client.warm(min(warm, max_connections))
        gc.collect()
        gc.freeze()  # the arrays and the pool are long-lived: keep the collector off them
        await client.run()
        print(
            f"openloop: {len(client.due)} requests, peak {client.peak_connections} connections, "
            f"{client.connect_errors} connect errors, {int((client.status == -2).sum())} not sent (cap)",
            file=sys.stderr,
        )
        return {
            "due": client.due,
            "latency": client.latency,
            "status": client.status,
            "lag": client.lag,
            "phases": np.array(phases, dtype=float).reshape(-1, 2),
            "peak_connections": np.array(client.peak_connections),
        }

    try:
        import uvloop

        return uvloop.run(go())
    except ImportError:
        return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", type=Path, required=True, help="file with the JSON body to POST")
    parser.add_argument("--phase", action="append", type=parse_phase, required=True, help="RATE:SECONDS")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request, s")
    parser.add_argument("--max-connections", type=int, default=15_000)
    parser.add_argument("--out", type=Path, required=True, help=".npz result file")
    args = parser.parse_args()
    if any(rate <= 0 or seconds < 0 or math.isnan(rate) for rate, seconds in args.phase):
        parser.error("every phase needs a positive rate and a non-negative duration")
    result = run(args.url, args.body.read_bytes(), args.phase, args.timeout, args.max_connections)
    np.savez(args.out, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
