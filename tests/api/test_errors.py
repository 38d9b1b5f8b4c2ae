"""The one error renderer's logging policy: a 503 while the model loads or drains is expected."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.support import Registry


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def probe_during_a_slow_load(app: Any, loaded: threading.Event, release: threading.Event) -> list[int]:
    """Start the app's lifespan, whose loader blocks until `release`; ask /ready while it blocks,
    then again once it has loaded; shut the app down. Returns the two statuses."""
    to_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await to_app.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, to_app.get, from_app.put)
    )
    statuses = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert await asyncio.to_thread(loaded.wait, 30), "the loader was never called"
        statuses.append((await client.get("/ready")).status_code)
        release.set()
        started = await asyncio.wait_for(from_app.get(), 60)
        assert started["type"] == "lifespan.startup.complete", started
        statuses.append((await client.get("/ready")).status_code)
    await to_app.put({"type": "lifespan.shutdown"})
    assert (await asyncio.wait_for(from_app.get(), 60))["type"] == "lifespan.shutdown.complete"
    await asyncio.wait_for(lifespan, 10)
    return statuses


def test_ready_while_the_first_load_is_slow_is_a_quiet_503(
    registry: Registry, champion: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    loaded, release = threading.Event(), threading.Event()

    def slow_loader(_: Settings) -> LoadedModel:
        loaded.set()
        assert release.wait(30)
        return champion

    app = create_app(Settings(tracking_uri=registry.tracking_uri), loader=slow_loader)
    caplog.set_level(logging.DEBUG)
    try:
        statuses = asyncio.run(probe_during_a_slow_load(app, loaded, release))
    finally:
        release.set()
    assert statuses == [503, 200]
    assert errors_logged(caplog) == [], "a 503 while loading is expected, not an error"


def test_ready_while_draining_is_a_quiet_503(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert client.get("/ready").status_code == 200
    client.app.state.dataplane.start_draining()  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG)
    for path in ["/ready", "/v2/health/ready", "/v2/models/ChurnPredictor/ready"]:
        assert client.get(path).status_code == 503, path
    assert client.get("/health").status_code == 200, "alive while draining"
    assert errors_logged(caplog) == [], "a 503 while draining is expected, not an error"
