"""Graceful drain on SIGTERM: readiness fails at once, the server stops accepting after a grace."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from model_api.dataplane import DataPlane

logger = logging.getLogger(__name__)


def install_sigterm_drain(plane: DataPlane, grace_s: float) -> Callable[[], None]:
    """Wrap the server's SIGTERM handler: mark the service draining now (/ready answers 503),
    hand the signal on after `grace_s` so the server stops accepting and finishes what it has.

    Load balancers and Kubernetes endpoints need a moment to stop routing to a pod that fails its
    readiness probe; requests that arrive meanwhile are still served. A second SIGTERM goes on at
    once. Returns a function that puts the previous handler back. Only the main thread can handle
    signals; elsewhere (a server run in a test thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return lambda: None
    server_handler: Callable[[int, FrameType | None], object] = previous
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if plane.draining:
            server_handler(signum, frame)
            return
        plane.start_draining()
        logger.info("SIGTERM: draining; /ready answers 503, new connections refused in %.1fs", grace_s)
        loop.call_soon_threadsafe(loop.call_later, grace_s, server_handler, signum, None)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, server_handler)

    return restore
