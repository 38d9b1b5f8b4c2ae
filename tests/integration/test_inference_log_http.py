"""The CloudEvents sink against a real HTTP receiver on 127.0.0.1: events, a stuck one, a dead one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from model_api.inference_log import (
    REDACTED,
    REQUEST_EVENT,
    RESPONSE_EVENT,
    CloudEventsSink,
    FieldMask,
    InferenceLog,
    InferenceRecord,
)
from tests.support import free_port, wait_until


@dataclass
class Receiver:
    """What the receiver saw, and a gate that holds every answer while closed (a stuck collector)."""

    url: str
    events: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)


@contextmanager
def receiver(stuck: bool = False) -> Iterator[Receiver]:
    port = free_port()
    seen = Receiver(f"http://127.0.0.1:{port}/events")
    if not stuck:
        seen.gate.set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            seen.events.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
            seen.arrived.set()
            seen.gate.wait(30)
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        seen.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


WHEN = "2026-11-30T17:21:09.123Z"


def make(index: int, status_code: int = 200) -> InferenceRecord:
    return InferenceRecord(
        request_id=f"req-{index}",
        model_name="ChurnPredictor",
        model_version="3",
        route="/v2/models/ChurnPredictor/infer",
        inputs={"inputs": [{"name": "email", "datatype": "BYTES", "shape": [1], "data": ["a@b.org"]}]},
        outputs={"outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [index % 2]}]},
        latency_ms=2.25,
        status_code=status_code,
        time=WHEN,
    )


def count(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("inference_log_records_total", {"outcome": outcome})
    assert value is not None
    return value


def test_each_answer_goes_as_kserve_request_and_response_events() -> None:
    registry = CollectorRegistry()
    with receiver() as seen:
        sink = CloudEventsSink(seen.url, 5, source="urn:model-api:test", namespace="ml")
        stream = InferenceLog(sink, registry, mask=FieldMask(redact={"email"}))
        stream.offer(lambda: make(1))
        stream.offer(lambda: make(2, status_code=422))
        stream.close(10)
    assert count(registry, "written") == 2
    # The 2xx answer: a request event then a response event; the 422: its request event only.
    assert [(h["ce-id"], h["ce-type"]) for h, _ in seen.events] == [
        ("req-1", REQUEST_EVENT),
        ("req-1", RESPONSE_EVENT),
        ("req-2", REQUEST_EVENT),
    ]
    (headers, request), (_, response), (failed, _) = seen.events
    record = make(1)
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-source"] == "urn:model-api:test"
    assert headers["ce-time"] == WHEN
    assert headers["content-type"] == "application/json"
    assert headers["ce-inferenceservicename"] == "ChurnPredictor"
    assert (headers["ce-component"], headers["ce-endpoint"], headers["ce-namespace"]) == (
        "predictor",
        "default",
        "ml",
    )
    assert (headers["ce-modelversion"], headers["ce-statuscode"], headers["ce-latencyms"]) == (
        "3",
        "200",
        "2.250",
    )
    assert failed["ce-statuscode"] == "422"
    assert request["inputs"][0]["data"] == [REDACTED]
    assert response == record.outputs


def test_a_stuck_receiver_drops_and_counts_but_never_blocks_offer() -> None:
    registry = CollectorRegistry()
    with receiver(stuck=True) as seen:
        stream = InferenceLog(CloudEventsSink(seen.url, 0.5), registry, queue_size=4)
        try:
            stream.offer(lambda: make(0))
            assert seen.arrived.wait(10), "the first event never arrived"
            for i in range(1, 21):  # each returns while the receiver holds the first POST
                stream.offer(lambda i=i: make(i))
            assert count(registry, "dropped") == 16
            # The writer gives up on the stuck POST after its timeout and counts the record failed.
            wait_until(lambda: count(registry, "failed") >= 1, 10, "the stuck POST to time out")
            seen.gate.set()
            wait_until(lambda: count(registry, "written") + count(registry, "failed") == 5, 10, "the queue")
            # The receiver answers again: the sink reconnects and the next record is written.
            stream.offer(lambda: make(21))
            wait_until(lambda: count(registry, "written") >= 1, 10, "a record written after the stall")
        finally:
            seen.gate.set()
            stream.close(10)
    assert count(registry, "dropped") == 16
    assert count(registry, "written") + count(registry, "failed") == 6


def test_a_dead_receiver_fails_records_and_requests_go_on() -> None:
    registry = CollectorRegistry()
    url = f"http://127.0.0.1:{free_port()}/events"  # nothing listens: connection refused
    stream = InferenceLog(CloudEventsSink(url, 1), registry, batch_size=3)
    for i in range(10):
        stream.offer(lambda i=i: make(i))
    stream.close(10)
    assert count(registry, "failed") == 10
    assert count(registry, "written") == count(registry, "dropped") == 0
