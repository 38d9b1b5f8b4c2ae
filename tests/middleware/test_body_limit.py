"""The body limit, on every route: a declared length over it is refused unread, a chunked body at
the chunk that crosses it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.settings import Settings
from tests.api.test_api import assert_error
from tests.support import Registry


def with_body_route(app: FastAPI) -> FastAPI:
    """The real app plus a route that reads its body its own way (not through read_json)."""

    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_api_route("/body-size", size, methods=["POST"])
    return app


def test_the_body_limit_holds_for_a_route_that_reads_its_own_body(registry: Registry) -> None:
    settings = Settings(tracking_uri=registry.tracking_uri, max_body_bytes=4096)
    with TestClient(with_body_route(create_app(settings))) as client:
        assert client.post("/body-size", content=b"x" * 4096).json() == {"size": 4096}
        assert_error(client.post("/body-size", content=b"x" * 4097), 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"x" * 1024

        assert_error(client.post("/body-size", content=chunks()), 413, "payload_too_large")


class Upload:
    """A client sending 10 MB in 1 KiB chunks straight to the ASGI app, counting what was read."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.read = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.read += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": self.read < 10_240}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def run(self, app: FastAPI) -> tuple[int, dict[str, Any]]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/body-size",
            "raw_path": b"/body-size",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *self.headers],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
            "state": {},
            "app": app,
        }
        asyncio.run(app(scope, self.receive, self.send))  # type: ignore[arg-type]
        return int(self.sent[0]["status"]), json.loads(self.sent[1]["body"])


def test_a_chunked_body_is_refused_at_the_chunk_that_crosses_the_limit() -> None:
    upload = Upload([(b"transfer-encoding", b"chunked")])
    status, body = upload.run(with_body_route(create_app(Settings(max_body_bytes=4096))))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert upload.read == 5, "4 KiB read, refused with the 5th; the rest of the 10 MB never read"


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    upload = Upload([(b"content-length", str(10 * 1024 * 1024).encode())])
    status, body = upload.run(with_body_route(create_app(Settings(max_body_bytes=4096))))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert upload.read == 0
