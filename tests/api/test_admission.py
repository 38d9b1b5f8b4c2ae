"""Admission control on a real server: refusals in every protocol's shape, expired and abandoned
requests that never reach the model, probes that answer throughout.

The model is the real demo model behind a gate: while the test holds the gate, the model thread is
busy with the first request and later ones wait in the queue, so nothing depends on timing.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from model_api.http_protocol import CoalescingHttpToolsProtocol
from model_api.main import create_app
from model_api.middleware.access import AccessLog
from model_api.middleware.admission import EarlyRefusal
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.api.test_api import Gated
from tests.support import free_port, server_in_thread, wait_until
from tests.support import metric_value as value

MODEL = "ChurnPredictor"


class Counting(Gated):
    """The gated model, counting the rows of every call made once armed."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.calls: list[int] = []

    def predict(self, frame: Any) -> Any:
        if self.armed:
            self.calls.append(len(frame))
        return super().predict(frame)


@dataclasses.dataclass
class Held:
    """A server whose only model thread is held by one request until `release()`."""

    url: str
    model: Counting
    rows: list[dict[str, Any]]
    answer: dict[str, httpx.Response]

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def release(self) -> httpx.Response:
        self.model.gate.set()
        wait_until(lambda: "first" in self.answer, 30, "the held request's answer")
        return self.answer["first"]


@contextmanager
def held_server(registry: Any, champion: LoadedModel, http: Any = "auto", **settings: Any) -> Iterator[Held]:
    model = Counting(champion.model)
    app = create_app(
        Settings(tracking_uri=registry.tracking_uri, **settings),
        loader=lambda _: dataclasses.replace(champion, model=model),
    )
    with server_in_thread(app, http=http) as url:
        rows = httpx.get(f"{url}/model/info", timeout=10).json()["input_example"]
        model.armed = True
        answer: dict[str, httpx.Response] = {}

        def first() -> None:
            answer["first"] = httpx.post(f"{url}/predict", json={"instances": rows}, timeout=60)

        caller = threading.Thread(target=first)
        caller.start()
        try:
            assert model.entered.wait(10), "the first request reached the model"
            yield Held(url, model, rows, answer)
        finally:
            model.gate.set()
            caller.join(30)


class Spy:
    """Counts the refusals `EarlyRefusal` answers in the HTTP protocol (it answers them still)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answered = 0
        answer = EarlyRefusal.answer

        def counted(refusal: EarlyRefusal, *args: Any) -> bytes | None:
            result = answer(refusal, *args)
            self.answered += result is not None
            return result

        monkeypatch.setattr(EarlyRefusal, "answer", counted)


# uvicorn's own protocol: the edge layer refuses; model-api's: the protocol does, before any ASGI call.
PROTOCOLS = pytest.mark.parametrize(
    "http", ["httptools", CoalescingHttpToolsProtocol], ids=["edge", "protocol"]
)


@PROTOCOLS
def test_past_the_bound_every_protocol_refuses_in_its_shape(
    registry: Any, champion: LoadedModel, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    with held_server(registry, champion, http=http, max_in_flight=1) as held:
        url = held.url
        before = held.metrics()
        # Malformed bodies: a 503 (not a 400) shows the body was never read.
        ours = httpx.post(
            f"{url}/predict", content=b"{not json", headers={"content-type": "application/json"}
        )
        v1 = httpx.post(f"{url}/v1/models/{MODEL}:predict", content=b"{not json")
        v2 = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=b"{not json")
        v2_version = httpx.post(f"{url}/v2/models/{MODEL}/versions/1/infer", content=b"{not json")
        mlflow = httpx.post(
            f"{url}/invocations", content=b"{not json", headers={"content-type": "application/json"}
        )
        # Probes, metrics and model info answer while predictions are refused.
        probes = [
            httpx.get(f"{url}{path}", timeout=5)
            for path in (
                "/health",
                "/ready",
                "/ping",
                "/v2/health/ready",
                "/v2/health/live",
                "/model/info",
                "/metrics",
            )
        ]
        probes.append(httpx.get(f"{url}/v1/models/{MODEL}", timeout=5))
        probes.append(httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=5))
        during = held.metrics()
        first = held.release()
        after = held.metrics()

    assert ours.status_code == 503 and ours.headers["retry-after"] == "1"
    error = ours.json()["error"]
    assert error["code"] == "overloaded" and "at capacity" in error["message"]
    assert error["request_id"] == ours.headers["x-request-id"]
    assert ours.headers["x-content-type-options"] == "nosniff" and ours.headers["cache-control"] == "no-store"
    for protocol in (v1, v2, v2_version):
        assert protocol.status_code == 503, protocol.text
        assert protocol.headers["retry-after"] == "1"
        assert set(protocol.json()) == {"error"} and "at capacity" in protocol.json()["error"]
    assert mlflow.status_code == 503 and mlflow.headers["retry-after"] == "1"
    assert (
        mlflow.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and "at capacity" in mlflow.json()["message"]
    )
    assert mlflow.json()["request_id"] == mlflow.headers["x-request-id"]
    assert [p.status_code for p in probes] == [200] * len(probes)
    assert first.status_code == 200
    assert value(before, "requests_shed_total", reason="overloaded") == 0
    assert value(during, "requests_shed_total", reason="overloaded") == 5
    assert value(during, "requests_in_flight") == 1
    assert value(during, "errors_total", code="overloaded") == 5
    ok = {"model_name": MODEL, "model_version": "1", "outcome": "ok"}
    assert value(after, "predictions_total", **ok) == 1, "refusals are not predictions"
    assert sum(value(after, "predictions_total", **{**ok, "outcome": o}) for o in ("invalid", "error")) == 0
    assert value(after, "requests_in_flight") == 0
    assert held.model.calls == [len(held.rows)]
    assert spy.answered == (0 if http == "httptools" else 5)


@PROTOCOLS
def test_with_cors_on_a_browser_can_read_the_refusal(
    registry: Any, champion: LoadedModel, http: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal answered outside CORS would carry no Access-Control-Allow-Origin: the browser would
    report a network error, not a 503 to back off from. With CORS on, the route refuses, inside it,
    still before the body is read; Retry-After is exposed to the page's script."""
    spy = Spy(monkeypatch)
    origin = "https://app.example.org"
    with held_server(registry, champion, http=http, max_in_flight=1, cors_origins=origin) as held:
        refused = httpx.post(
            f"{held.url}/predict",
            content=b"{not json",
            headers={"content-type": "application/json", "origin": origin},
        )
        other = httpx.post(
            f"{held.url}/v2/models/{MODEL}/infer",
            content=b"{not json",
            headers={"origin": "https://elsewhere.example.org"},
        )
        during = held.metrics()
        assert held.release().status_code == 200

    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["access-control-allow-origin"] == origin
    exposed = {h.strip().lower() for h in refused.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-request-id"} <= exposed
    assert other.status_code == 503 and "access-control-allow-origin" not in other.headers
    assert value(during, "requests_shed_total", reason="overloaded") == 2
    assert spy.answered == 0, "not answered in the protocol, outside CORS"
    assert held.model.calls == [len(held.rows)]


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send `request` on a new connection and read until the server has answered and closed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def split_answer(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines)  # in the order sent
    headers.pop(b"date", None)  # the server's clock
    return status, headers, body


def test_the_protocol_refuses_with_the_edge_layers_bytes_and_keeps_the_connection(
    registry: Any, champion: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`100-continue` sends a request past the protocol's refusal to the edge layer's: both
    answers are the same bytes (but the Date), and a refused request's body does not end the
    connection: the next request on it is answered."""
    spy = Spy(monkeypatch)
    with held_server(registry, champion, http=CoalescingHttpToolsProtocol, max_in_flight=1) as held:
        body = b'{"instances": [{"x": 1}]}'
        for path in ("/predict", "/invocations", f"/v1/models/{MODEL}:predict", f"/v2/models/{MODEL}/infer"):
            request = (
                b"POST %s HTTP/1.1\r\nHost: x\r\nX-Request-ID: rid-1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n" % (path.encode(), len(body))
            )
            before = spy.answered
            edge = raw_exchange(held.url, request + b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
            assert spy.answered == before
            # Two requests on one keep-alive connection: the refusal, then a probe, each answered.
            both = raw_exchange(
                held.url,
                request + b"\r\n" + body + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            assert spy.answered == before + 1
            ours, _, probe = both.partition(b"HTTP/1.1 200 OK")
            assert probe, both
            edge_status, edge_headers, edge_body = split_answer(edge)
            status, headers, refusal_body = split_answer(ours)
            edge_headers.pop(b"connection")
            assert (status, headers, refusal_body) == (edge_status, edge_headers, edge_body)
            assert list(headers) == list(edge_headers), "the same headers in the same order"
            assert status == b"HTTP/1.1 503 Service Unavailable" and headers[b"retry-after"] == b"1"
            assert headers[b"x-request-id"] == b"rid-1"
        # A chunked body is dropped as it comes; HTTP/1.0 without keep-alive is closed after the answer.
        chunked = raw_exchange(
            held.url,
            b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        assert chunked.startswith(b"HTTP/1.1 503 ") and b"HTTP/1.1 200 OK" in chunked, chunked
        closed = raw_exchange(held.url, b"POST /predict HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        assert closed.startswith(b"HTTP/1.1 503 ") and b"connection: close\r\n" in closed
        assert spy.answered == 6
        during = held.metrics()
        first = held.release()
    assert first.status_code == 200
    assert value(during, "requests_shed_total", reason="overloaded") == 10
    assert value(during, "errors_total", code="overloaded") == 10
    assert value(during, "http_requests_total", handler="/predict", method="POST", status="503") == 4
    v1 = {"handler": "/v1/models/{name}:predict", "method": "POST", "status": "503"}
    assert value(during, "http_requests_total", **v1) == 2
    assert held.model.calls == [len(held.rows)]


def test_under_the_bound_requests_queue_and_are_answered(registry: Any, champion: LoadedModel) -> None:
    with held_server(registry, champion, max_in_flight=2) as held:
        second: dict[str, httpx.Response] = {}

        def call() -> None:
            second["r"] = httpx.post(f"{held.url}/predict", json={"instances": held.rows}, timeout=60)

        caller = threading.Thread(target=call)
        caller.start()
        try:
            wait_until(lambda: value(held.metrics(), "queue_depth") == 1, 10, "the second request to queue")
            during = held.metrics()
            # Busy (the model running, a request queued) is still ready: readiness is about
            # whether this pod can serve, not whether it is idle (see the README's Overload).
            ready = httpx.get(f"{held.url}/ready", timeout=10)
            refused = httpx.post(f"{held.url}/predict", json={"instances": held.rows}, timeout=10)
        finally:
            held.release()
            caller.join(30)
    assert value(during, "requests_in_flight") == 2
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert refused.status_code == 503
    assert second["r"].status_code == 200
    assert len(held.model.calls) == 2


def test_a_request_whose_budget_runs_out_in_the_queue_never_reaches_the_model(
    registry: Any, champion: LoadedModel
) -> None:
    with held_server(registry, champion) as held:
        late = httpx.post(
            f"{held.url}/v1/models/{MODEL}:predict",
            json={"instances": held.rows},
            headers={"x-request-timeout": "0.2"},
            timeout=30,
        )
        ours = httpx.post(
            f"{held.url}/predict",
            json={"instances": held.rows},
            headers={"x-request-timeout": "0.2"},
            timeout=30,
        )
        during = held.metrics()
        first = held.release()
        after = held.metrics()
    assert late.status_code == 504 and "0.2s timeout" in late.json()["error"]
    assert ours.status_code == 504 and ours.json()["error"]["code"] == "timeout"
    assert "not computed" in ours.json()["error"]["message"]
    assert first.status_code == 200
    assert held.model.calls == [len(held.rows)], "the expired requests cost no model time"
    assert value(during, "requests_shed_total", reason="expired") == 2
    assert value(after, "queue_depth") == 0 and value(after, "requests_in_flight") == 0
    model = {"model_name": MODEL, "model_version": "1"}
    assert value(after, "predictions_total", **model, outcome="ok") == 1
    assert value(after, "predictions_total", **model, outcome="error") == 0, "expired is shed, not an error"


def test_a_malformed_budget_header_is_a_bad_request(registry: Any, champion: LoadedModel) -> None:
    app = create_app(Settings(tracking_uri=registry.tracking_uri), loader=lambda _: champion)
    with server_in_thread(app) as url:
        response = httpx.post(f"{url}/predict", json={"instances": []}, headers={"x-request-timeout": "soon"})
    assert response.status_code == 400
    assert "x-request-timeout" in response.json()["error"]["message"]


def test_a_client_that_disconnects_is_dropped_from_the_queue(registry: Any, champion: LoadedModel) -> None:
    with held_server(registry, champion) as held:
        port = int(held.url.rsplit(":", 1)[1])
        body = orjson.dumps({"instances": held.rows})
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as gone:
            gone.sendall(head + body)
            wait_until(lambda: value(held.metrics(), "queue_depth") == 1, 10, "the request to queue")
        wait_until(
            lambda: value(held.metrics(), "requests_shed_total", reason="disconnected") == 1,
            10,
            "the disconnected request to leave the queue",
        )
        during = held.metrics()
        first = held.release()
        after = held.metrics()
    assert value(during, "queue_depth") == 0 and value(during, "requests_in_flight") == 1
    assert first.status_code == 200
    assert held.model.calls == [len(held.rows)], "the abandoned request cost no model time"
    assert value(after, "errors_total", code="client_disconnected") == 1
    assert value(after, "predictions_total", model_name=MODEL, model_version="1", outcome="ok") == 1


def test_admitted_prediction_requests_are_paced_only_while_the_worker_sheds(registry: Any) -> None:
    app = create_app(Settings(tracking_uri=registry.tracking_uri, max_in_flight=3, pace_per_turn=4))
    plane = app.state.dataplane
    refusal = EarlyRefusal(plane, AccessLog(plane.metrics), app)
    predictions = [b"/predict", b"/invocations", b"/v1/models/m:predict", b"/v2/models/m/infer"]
    assert [refusal.pacer(b"POST", p, "") for p in predictions] == [None] * 4  # not shedding
    plane.refuse()  # a refusal: the worker sheds for the next 50 ms
    pacer = refusal.pacer(b"POST", b"/predict", "")
    assert pacer is not None and pacer.pace.per_turn == 4
    assert all(refusal.pacer(b"POST", p, "") is pacer for p in predictions)
    # never a probe, a GET or another POST (they neither wait nor count toward the bound)
    assert refusal.pacer(b"GET", b"/predict", "") is None
    assert refusal.pacer(b"POST", b"/admin/reload", "") is None
    assert refusal.pacer(b"GET", b"/health", "") is None
    # held requests count toward the bound and in the in-flight gauge until the app admits them
    for _ in range(3):
        plane.hold()
    assert plane.full() and value(plane.metrics.render().decode(), "requests_in_flight") == 3
    plane.unhold()
    plane.drop_held()
    assert not plane.full() and plane.held == 1
    assert value(plane.metrics.render().decode(), "requests_shed_total", reason="disconnected") == 1
    plane.unhold()
    assert value(plane.metrics.render().decode(), "requests_in_flight") == 0
    # long turns cut the pace (MODEL_API_PACE_TURN_MS, 5 by default); once the spike is over, the
    # next request finds the pace back at its most
    pacer.pace.after_turn(1.0)
    assert pacer.pace.per_turn == 3
    assert refusal.pacer(b"POST", b"/predict", "") is pacer and pacer.pace.per_turn == 3  # still shedding
    plane.shed_at = float("-inf")  # no refusal for longer than the shedding window
    assert refusal.pacer(b"POST", b"/predict", "") is None and pacer.pace.per_turn == 4
    off = create_app(Settings(tracking_uri=registry.tracking_uri, pace_per_turn=0)).state.dataplane
    off.refuse()
    assert EarlyRefusal(off, AccessLog(off.metrics), app).pacer(b"POST", b"/predict", "") is None


def test_the_protocols_refusal_counts_and_logs_as_the_edge_layer_would(
    registry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`EarlyRefusal.answer` counts a refusal in the same metrics as `AccessLog.record`, logs it
    at debug level only (with its request id), and takes each new list of the server's default
    headers (uvicorn renders a new one, its Date, once a second)."""
    app = create_app(Settings(tracking_uri=registry.tracking_uri, max_in_flight=1))
    plane = app.state.dataplane
    refusal = EarlyRefusal(plane, AccessLog(plane.metrics), app)
    plane.in_flight = 1  # full
    headers = [(b"host", b"x"), (b"x-request-id", b"rid-7")]
    first = [(b"date", b"Fri, 04 Dec 2026 17:00:00 GMT"), (b"server", b"uvicorn")]
    caplog.set_level("INFO", logger="model_api.access")
    answer = refusal.answer(b"POST", b"/predict", headers, "", first, True)
    assert answer is not None and not caplog.records, "no access line at info level"
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\ndate: Fri, 04 Dec 2026 17:00:00 GMT\r\n")
    assert b"x-request-id: rid-7\r\n" in answer and b'"request_id":"rid-7"' in answer
    caplog.set_level("DEBUG", logger="model_api.access")
    later = [(b"date", b"Fri, 04 Dec 2026 17:00:01 GMT"), (b"server", b"uvicorn")]
    answer = refusal.answer(b"POST", b"/predict?x=1", [(b"x-request-id", b"bad id")], "", later, False)
    assert answer is not None and b"date: Fri, 04 Dec 2026 17:00:01 GMT\r\n" in answer
    assert answer.endswith(b"}") and b"connection: close\r\n\r\n{" in answer
    [line] = caplog.records
    assert line.levelname == "DEBUG" and line.status == 503 and line.route == "/predict"  # type: ignore[attr-defined]
    assert line.error_code == "overloaded" and len(line.request_id) == 32  # type: ignore[attr-defined]
    assert line.request_id.encode() in answer  # type: ignore[attr-defined]
    assert refusal.answer(b"GET", b"/predict", headers, "", later, True) is None
    assert refusal.answer(b"POST", b"/health", headers, "", later, True) is None
    plane.in_flight = 0
    assert refusal.answer(b"POST", b"/predict", headers, "", later, True) is None
    metrics = plane.metrics.render().decode()
    assert value(metrics, "http_requests_total", handler="/predict", method="POST", status="503") == 2
    assert (
        value(metrics, "http_request_duration_seconds_count", handler="/predict", method="POST", status="503")
        == 2
    )
    assert value(metrics, "errors_total", code="overloaded") == 2
    assert value(metrics, "requests_shed_total", reason="overloaded") == 2


def test_while_shedding_the_first_arrivals_of_a_turn_are_admitted_and_the_rest_refused(
    registry: Any, champion: LoadedModel
) -> None:
    """Eight prediction requests read in one turn of the loop, a bound of 4, two starts a turn, the
    worker shedding: the first four are counted toward the bound at once and answered, the others
    refused by the protocol. Were a request the pacer starts in its first turn not counted until
    its task ran, those held behind it would take its place and the app would refuse it."""
    app = create_app(
        Settings(tracking_uri=registry.tracking_uri, max_in_flight=4, pace_per_turn=2),
        loader=lambda _: champion,
    )
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=CoalescingHttpToolsProtocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 60, "the server to start")
        assert server.started
        url = f"http://127.0.0.1:{port}"
        body = orjson.dumps({"instances": httpx.get(f"{url}/model/info", timeout=10).json()["input_example"]})
        request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        plane = app.state.dataplane
        plane.shed_at = math.inf  # shedding throughout (a refusal "just now")
        conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
        try:
            time.sleep(0.2)  # every connection accepted
            loop = server.servers[0].get_loop()
            loop.call_soon_threadsafe(time.sleep, 0.5)  # the loop reads nothing meanwhile
            time.sleep(0.1)
            for conn in conns:
                conn.sendall(request)
                time.sleep(0.01)  # in this order
            statuses = [int(read_head(conn).split()[1]) for conn in conns]
        finally:
            for conn in conns:
                conn.close()
        wait_until(lambda: value(httpx.get(f"{url}/metrics").text, "requests_in_flight") == 0, 10, "idle")
        assert plane.held == 0 and plane.in_flight == 0
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert statuses == [200] * 4 + [503] * 4


def read_head(conn: socket.socket) -> bytes:
    """An answer's status line and headers (the body is not read)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection before answering"
        received += chunk
    return received.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
def test_a_client_that_leaves_before_its_body_is_read_is_shed_not_an_error(
    registry: Any, champion: LoadedModel, path: str
) -> None:
    app = create_app(Settings(tracking_uri=registry.tracking_uri), loader=lambda _: champion)
    with server_in_thread(app, http=CoalescingHttpToolsProtocol) as url:

        def metrics() -> str:
            return httpx.get(f"{url}/metrics", timeout=5).text

        port = int(url.rsplit(":", 1)[1])
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as gone:
            gone.sendall(head + b'{"instances": [')  # a tenth of the body, then the client leaves
            wait_until(lambda: value(metrics(), "requests_in_flight") == 1, 10, "read")
        wait_until(
            lambda: value(metrics(), "requests_shed_total", reason="disconnected") == 1,
            10,
            "the request to be shed",
        )
        after = metrics()
    assert value(after, "errors_total", code="internal_error") == 0  # Starlette's ClientDisconnect
    assert value(after, "errors_total", code="client_disconnected") == 1
    assert value(after, "requests_in_flight") == 0
