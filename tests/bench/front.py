"""An admission front, measured, not served: the worker behind a separate process that refuses.

`make overload --front` runs the worker with no bound of its own (`MODEL_API_MAX_IN_FLIGHT=0`)
behind this process, pinned to the same core: it takes the clients' connections, forwards each
request to the worker over keep-alive connections, at most ``--bound`` POSTs at once, and answers
a POST past the bound at once with one fixed 503 (`overloaded`, `Retry-After: 1`); anything else
waits for a connection and is never refused. Its question: what the overload targets become when
a refusal costs what it costs in a process that does nothing else (uvloop, httptools, a few lines
of Python; about 8 us of the core against about 27 in the worker's own HTTP protocol on
2026-12-04) and no longer waits for the turn of an event loop that runs the admitted requests'
work (the kernel runs this process as soon as a request arrives).

It is not the server: its refusal has no request id, no security headers and one body for every
protocol, it counts nothing in the worker's metrics, and it neither drains on SIGTERM nor adds
`X-Forwarded-For`. Requests are rebuilt from what httptools parsed (method, target, headers but
the hop-by-hop ones, the body with its Content-Length), so pipelined and chunked requests are
forwarded one at a time; a client that leaves while its request is forwarded has the upstream
connection closed under it, which the worker sees as a disconnect.

Run as ``python -m tests.bench.front --port PORT --upstream UPSTREAM_PORT --bound N``, or, to run it
in a thread of the worker's own process (one interpreter, one GIL: the in-process variant of the
question), as ``python -m tests.bench.front --in-worker --port PORT --bound N [--switch-interval S]``
with the worker's settings in the environment: the thread starts once the worker is ready on
`MODEL_API_PORT`, and the main thread runs `model-api serve`. A thread waiting for the GIL gets it
after at most the interpreter's switch interval (5 ms unless `--switch-interval` says otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from collections import deque

import httptools
import uvloop

BODY = b'{"error":{"code":"overloaded","message":"this worker is at capacity; retry shortly"}}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"content-length"}
)
"""Headers that describe one connection, not the request (RFC 9110, 7.6.1), and the body's
length, which the forwarded request states itself."""


class Front:
    """The pool of upstream connections and the bound on the POSTs forwarded at once."""

    def __init__(self, upstream_port: int, bound: int) -> None:
        self.upstream_port = upstream_port
        self.bound = bound
        self.posts = 0
        """POSTs forwarded and not yet answered."""
        self.idle: list[Upstream] = []
        self.waiting: deque[tuple[Client, bytes, bool]] = deque()
        """Requests that wait for an upstream connection: (client, request, is a POST)."""

    def forward(self, client: Client, request: bytes, post: bool) -> None:
        if post:
            if self.posts >= self.bound:
                client.answer(REFUSAL)
                client.finished()
                return
            self.posts += 1
        if self.idle:
            self.idle.pop().send(client, request, post)
            return
        self.waiting.append((client, request, post))
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        await asyncio.get_running_loop().create_connection(
            lambda: Upstream(self), "127.0.0.1", self.upstream_port
        )

    def free(self, upstream: Upstream) -> None:
        """`upstream` answered its request: give it the next waiting one, or keep it idle."""
        while self.waiting:
            client, request, post = self.waiting.popleft()
            if client.gone:
                self.posts -= post
                continue
            upstream.send(client, request, post)
            return
        self.idle.append(upstream)


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the worker, carrying one request at a time; the answer's bytes
    go to the client as they come, and its end (httptools) frees the connection."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.post = False
        self.abandoned = False
        """Its client left: the connection is closed, never reused."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.free(self)

    def send(self, client: Client, request: bytes, post: bool) -> None:
        self.client, self.post = client, post
        client.upstream = self
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.client is not None and not self.abandoned:
            self.client.answer(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.done()
        if not self.abandoned:
            self.front.free(self)

    def abandon(self) -> None:
        """The client left while its request was forwarded: close under it (the worker sees a
        disconnect); `connection_lost` counts the request as done."""
        self.abandoned = True
        assert self.transport is not None
        self.transport.close()

    def done(self) -> None:
        if self.client is not None:
            self.client.finished()
        self.client = None
        self.front.posts -= self.post
        self.post = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.front.idle:
            self.front.idle.remove(self)
        if self.client is not None:
            self.client.close()
            self.done()


class Client(asyncio.Protocol):
    """One client connection: its requests, parsed by httptools, are forwarded one at a time."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        """The connection carrying its request to the worker, once one does."""
        self.queued: deque[tuple[bytes, bool]] = deque()
        self.busy = False
        """One of its requests is in the front (waiting for a connection, or forwarded): the next
        waits for its answer, so that answers go back in order."""
        self.gone = False
        self._url = b""
        self._headers: list[bytes] = []
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in HOP_BY_HOP:
            self._headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        body = b"".join(self._body)
        request = b"%s %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (
            method,
            self._url,
            b"".join(self._headers),
            len(body),
            body,
        )
        self.queued.append((request, method == b"POST"))
        self.next_request()

    def next_request(self) -> None:
        """Forward the next request this client sent, unless one is in the front already."""
        if not self.busy and self.queued and not self.gone:
            request, post = self.queued.popleft()
            self.busy = True
            self.front.forward(self, request, post)

    def finished(self) -> None:
        """Its request was answered (or refused): forward the next."""
        self.busy = False
        self.upstream = None
        self.next_request()

    def answer(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.upstream is not None:
            self.upstream.abandon()


async def serve(port: int, upstream_port: int, bound: int) -> None:
    front = Front(upstream_port, bound)
    for _ in range(bound):
        await front.connect()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(front), "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def in_worker(port: int, bound: int) -> None:
    """Serve the front in a thread once the worker (`model-api serve`, run here in the main thread
    with the settings in the environment) is ready on `MODEL_API_PORT`."""
    upstream = int(os.environ["MODEL_API_PORT"])

    def front() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", upstream), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        uvloop.run(serve(port, upstream, bound))

    threading.Thread(target=front, name="front", daemon=True).start()
    from model_api.cli import main as model_api

    sys.argv = ["model-api", "serve"]
    model_api()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=int, help="the worker's port (not with --in-worker)")
    parser.add_argument("--bound", type=int, default=64, help="POSTs forwarded at once")
    parser.add_argument("--in-worker", action="store_true", help="run in a thread of the worker")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval, in seconds")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    if args.in_worker:
        in_worker(args.port, args.bound)
    elif args.upstream is None:
        parser.error("--upstream is required without --in-worker")
    else:
        uvloop.run(serve(args.port, args.upstream, args.bound))


if __name__ == "__main__":
    main()
