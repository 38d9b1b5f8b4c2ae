"""The floor of a refusal's time on this machine: a server that refuses every request at once.

`make overload` times a refusal from the moment the open-loop generator was due to send the request
to the moment it has parsed the 503. Part of that is not the server's: the generator's 1 ms
schedule, its own event loop, the loopback and the scheduler of a shared machine. This server
costs as little as an HTTP server can in Python (uvloop, httptools, one fixed answer written as
each request's last byte arrives, nothing else), so the same generator at the same rate against
it measures that part alone; `make overload` reports it next to the worker's refusal time.

Run as ``python -m tests.bench.floor --port PORT --seconds S``; pin it with taskset to the worker's
core. It answers every POST with the same 503 (`overloaded`, `Retry-After: 1`), any other request
with a 200 (so a readiness poll sees it up), and stops after `S` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop

BODY = b'{"error":{"code":"overloaded","message":"the server is at capacity; retry later"}}'
ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
UP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Refuser(asyncio.Protocol):
    """One keep-alive connection: every complete POST gets `ANSWER`, anything else `UP`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(ANSWER if self.parser.get_method() == b"POST" else UP)


async def serve(port: int, seconds: float) -> None:
    server = await asyncio.get_running_loop().create_server(Refuser, "127.0.0.1", port, backlog=2048)
    async with server:
        await asyncio.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.seconds))


if __name__ == "__main__":
    main()
