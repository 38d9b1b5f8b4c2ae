"""uvicorn's httptools protocol, writing each connection's bytes once per event-loop iteration.

uvicorn writes a response in two `transport.write` calls (the status line and headers, then the
body), and uvloop sends each at once: two `send` system calls per answer. On this project's
machines a system call is dear: a server answering single-row predictions at 64 connections
spent 12% of its CPU in those writes (py-spy), and joining them raised its throughput by 18-36%
(wrk, one worker on one core, demo model on the fast path). `CoalescingHttpToolsProtocol` hands
uvicorn's protocol a transport that gathers a connection's writes and sends them in one call at
the end of the current loop iteration; a single client waits one loop step more for its answer
(~60 us, measured). Everything else is uvicorn's own; `model-api serve` selects it (`cli.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose `write`s are joined and sent once, in a callback the loop runs after
    the current ones; `close` sends what is gathered first. Every other call goes to the real
    transport (uvicorn's flow control keeps the real one, so pausing reads is not delayed)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Send what was written since the last flush, in one write (nothing once closing)."""
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol with a `CoalescingTransport` under its request cycles."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
