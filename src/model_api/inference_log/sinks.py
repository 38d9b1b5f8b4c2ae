"""Where inference records go: a rotated JSON Lines file, or CloudEvents POSTed to a collector.

A sink is used by one writer thread only. `write(records)` writes a batch and raises `SinkError`
carrying how many of the batch were written when some were not; any other exception means none
were. Error messages never carry payload values.

CloudEvents follow KServe's payload logger (kserve/kserve pkg/logger: worker.go, handler.go), so
its receivers (Knative event-display, KServe's message dumper, TrustyAI, ...) read ours unchanged:
binary content mode (the event's attributes in `ce-*` headers, the payload as the body), one
`org.kubeflow.serving.inference.request` event with the inputs and, for a 2xx answer, one
`org.kubeflow.serving.inference.response` event with the outputs, both with `ce-id` = the request
id, which is how those receivers join a request to its response.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from model_api.inference_log.record import JSON_OPTIONS, InferenceRecord

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"


class SinkError(Exception):
    """A batch was partly or wholly not written; `written` of its records were."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class Sink(Protocol):
    """A destination for batches of records (see the module docstring for the error contract)."""

    name: str

    def write(self, records: Sequence[InferenceRecord]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object a line (the record's fields), appended to `path` and rotated by size.

    When a line would take the file past `max_bytes`, the file becomes `path.1` (`path.1` becomes
    `path.2`, ... up to `backups`; the oldest is deleted) and a new file starts; `max_bytes` 0 never
    rotates, `backups` 0 truncates instead. Rotation happens only between lines, so no record is
    ever split, and a batch is written with one flush. The standard library's RotatingFileHandler
    was not used: it formats LogRecords, flushes every record, and checks the size by seeking
    before every one; this is twenty lines. One process per file: with several workers, give each
    its own path.
    """

    name = "file"

    def __init__(self, path: Path, max_bytes: int = 100 * 2**20, backups: int = 5) -> None:
        if max_bytes < 0 or backups < 0:
            raise ValueError("max_bytes and backups must be >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._size = os.fstat(self._file.fileno()).st_size

    def write(self, records: Sequence[InferenceRecord]) -> None:
        lines, unencodable = [], 0
        for record in records:
            try:
                lines.append(orjson.dumps(record.to_dict(), option=JSON_OPTIONS) + b"\n")
            except TypeError:
                unencodable += 1
        for line in lines:
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._size += len(line)
        self._file.flush()
        if unencodable:
            raise SinkError(f"{unencodable} records are not JSON-able", written=len(lines))

    def _rotate(self) -> None:
        self._file.close()
        if self.backups:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("wb")
        self._size = 0

    def close(self) -> None:
        self._file.close()


class CloudEventsSink:
    """POSTs each record as CloudEvents 1.0 in binary content mode to `url` (http or https).

    Headers of both events: `ce-specversion: 1.0`, `ce-id` (request id), `ce-type` (REQUEST_EVENT or
    RESPONSE_EVENT), `ce-source` (`source`), `ce-time` (the record's time), `content-type:
    application/json`; KServe's extensions `ce-inferenceservicename` (the model name),
    `ce-component`, `ce-endpoint` and, when given, `ce-namespace`; and ours, which KServe's
    receivers ignore: `ce-modelversion`, `ce-route`, `ce-statuscode`, `ce-latencyms`. Like KServe,
    an answer that is not 2xx sends the request event only (its `ce-statuscode` tells why).

    One keep-alive connection; `timeout_s` bounds connecting and every read and write on it, so a
    stuck collector costs the writer thread at most that per event before the batch fails. A
    response other than 2xx, or no response, fails the rest of the batch.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        timeout_s: float = 2.0,
        *,
        source: str = "urn:model-api",
        component: str = "predictor",
        endpoint: str = "default",
        namespace: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the inference log URL must be http:// or https:// with a host")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self._static = {"ce-specversion": "1.0", "ce-source": source, "content-type": "application/json"}
        self._static |= {"ce-component": component, "ce-endpoint": endpoint}
        if namespace:
            self._static["ce-namespace"] = namespace
        self._connection: http.client.HTTPConnection | None = None

    def write(self, records: Sequence[InferenceRecord]) -> None:
        written = unencodable = 0
        for record in records:
            try:
                events = [(REQUEST_EVENT, orjson.dumps(record.inputs, option=JSON_OPTIONS))]
                if 200 <= record.status_code < 300:
                    events.append((RESPONSE_EVENT, orjson.dumps(record.outputs, option=JSON_OPTIONS)))
            except TypeError:
                unencodable += 1
                continue
            try:
                for event_type, body in events:
                    self._post(record, event_type, body)
            except (OSError, ValueError, http.client.HTTPException, SinkError) as exc:
                self._disconnect()
                reason = str(exc) if isinstance(exc, SinkError) else type(exc).__name__
                raise SinkError(f"POST failed: {reason}", written=written) from exc
            written += 1
        if unencodable:
            raise SinkError(f"{unencodable} records are not JSON-able", written=written)

    def _post(self, record: InferenceRecord, event_type: str, body: bytes) -> None:
        headers = self._static | {
            "ce-id": record.request_id,
            "ce-type": event_type,
            "ce-time": record.time,
            "ce-inferenceservicename": record.model_name,
            "ce-modelversion": record.model_version,
            "ce-route": record.route,
            "ce-statuscode": str(record.status_code),
            "ce-latencyms": f"{record.latency_ms:.3f}",
        }
        connection = self._connect()
        connection.request("POST", self._target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.will_close:
            self._disconnect()
        if not 200 <= response.status < 300:
            raise SinkError(f"HTTP {response.status}")

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=self.timeout_s)
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        self._disconnect()
