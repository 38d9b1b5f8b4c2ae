"""The inference log against a real file: records, rotation, sampling, masking, drops, close."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from model_api.inference_log import (
    REDACTED,
    CloudEventsSink,
    FieldMask,
    InferenceLog,
    InferenceRecord,
    JsonLinesSink,
    build_inference_log,
    utc_time,
)
from model_api.settings import Settings
from tests.support import wait_until

SALT = b"pepper"


def make(index: int, inputs: Any = None, status_code: int = 200) -> InferenceRecord:
    return InferenceRecord(
        request_id=f"req-{index:05d}",
        model_name="ChurnPredictor",
        model_version="3",
        route="/predict",
        inputs=inputs if inputs is not None else [{"tenure": index, "plan": "basic"}],
        outputs={"predictions": [index % 2]},
        latency_ms=1.5,
        status_code=status_code,
    )


def count(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("inference_log_records_total", {"outcome": outcome})
    assert value is not None
    return value


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class GatedSink:
    """A sink that holds every write until the test opens the gate (a stuck collector)."""

    name = "gated"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.written: list[InferenceRecord] = []

    def write(self, records: Sequence[InferenceRecord]) -> None:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.written.extend(records)

    def close(self) -> None:
        pass


class FailingSink:
    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def write(self, records: Sequence[InferenceRecord]) -> None:
        self.calls += 1
        raise RuntimeError("secret-payload-value")

    def close(self) -> None:
        pass


def test_records_are_written_to_the_file_and_read_back(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "logs" / "inference.jsonl"
    stream = InferenceLog(JsonLinesSink(path), registry)
    records = [make(i) for i in range(5)]
    for record in records:
        stream.offer(lambda record=record: record)
    stream.close(10)
    lines = read_lines(path)
    assert lines == [record.to_dict() for record in records]
    assert lines[0]["request_id"] == "req-00000"
    assert lines[0]["time"].endswith("Z")
    assert set(lines[0]) == {
        "request_id", "time", "model_name", "model_version", "route",
        "inputs", "outputs", "latency_ms", "status_code",
    }  # fmt: skip
    assert count(registry, "written") == 5
    assert count(registry, "dropped") == count(registry, "failed") == 0


def test_file_rotates_by_size_keeping_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "inference.jsonl"
    # Lines differ by a byte or two; ten of the longest fit in a file, eleven of the shortest do not.
    line_bytes = max(len(json.dumps(make(i).to_dict(), separators=(",", ":"))) + 1 for i in range(45))
    sink = JsonLinesSink(path, max_bytes=line_bytes * 10, backups=2)
    for start in range(0, 45, 5):
        sink.write([make(i) for i in range(start, start + 5)])
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["inference.jsonl", "inference.jsonl.1", "inference.jsonl.2"]
    assert all(f.stat().st_size <= line_bytes * 10 for f in files)
    ids = [[line["request_id"] for line in read_lines(f)] for f in (path.with_suffix(".jsonl.2"),
           path.with_suffix(".jsonl.1"), path)]  # fmt: skip
    # 45 records of 10 a file: the oldest 20 were rotated away; the newest are in PATH; order kept.
    assert [i for chunk in ids for i in chunk] == [f"req-{i:05d}" for i in range(20, 45)]
    assert len(ids[2]) == 5


def test_reopening_appends_and_rotation_counts_the_existing_size(tmp_path: Path) -> None:
    path = tmp_path / "inference.jsonl"
    line_bytes = len(json.dumps(make(0).to_dict(), separators=(",", ":"))) + 1
    first = JsonLinesSink(path, max_bytes=line_bytes * 3, backups=1)
    first.write([make(0), make(1)])
    first.close()
    second = JsonLinesSink(path, max_bytes=line_bytes * 3, backups=1)
    second.write([make(2), make(3)])
    second.close()
    assert [r["request_id"] for r in read_lines(path.with_suffix(".jsonl.1"))] == [
        "req-00000", "req-00001", "req-00002",
    ]  # fmt: skip
    assert [r["request_id"] for r in read_lines(path)] == ["req-00003"]


@pytest.mark.parametrize(("rate", "low", "high"), [(0.2, 1700, 2300), (0.0, 0, 0), (1.0, 10_000, 10_000)])
def test_sampling_builds_only_the_sampled_records(tmp_path: Path, rate: float, low: int, high: int) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    stream = InferenceLog(
        JsonLinesSink(path), registry, sample_rate=rate, queue_size=20_000, rng=random.Random(7)
    )
    built = 0

    def build() -> InferenceRecord:
        nonlocal built
        built += 1
        return make(built)

    for _ in range(10_000):
        stream.offer(build)
    stream.close(30)
    assert low <= built <= high
    assert count(registry, "written") == built
    assert len(path.read_text().splitlines()) == built


def test_named_fields_are_redacted_or_hashed_in_every_input_shape(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    mask = FieldMask(redact={"email"}, hashed={"customer_id"}, salt=SALT)
    stream = InferenceLog(JsonLinesSink(path), registry, mask=mask)
    rows = [
        {"customer_id": "C-1001", "email": "ann@example.org", "tenure": 3},
        {"customer_id": "C-2002", "email": "bob@example.org", "tenure": 4},
    ]
    columns = {"customer_id": ["C-1001", "C-3003"], "email": ["ann@example.org", None], "tenure": [3, 5]}
    tensors = {
        "inputs": [
            {"name": "customer_id", "datatype": "BYTES", "shape": [1], "data": ["C-1001"]},
            {"name": "email", "datatype": "BYTES", "shape": [1], "data": ["ann@example.org"]},
            {"name": "tenure", "datatype": "INT64", "shape": [1], "data": [3]},
        ]
    }
    for index, inputs in enumerate([rows, columns, tensors]):
        stream.offer(lambda index=index, inputs=inputs: make(index, inputs=inputs))
    stream.close(10)

    text = path.read_text()
    for raw in ("C-1001", "C-2002", "C-3003", "ann@example.org", "bob@example.org"):
        assert raw not in text
    digest = hmac.new(SALT, b"C-1001", hashlib.sha256).hexdigest()
    by_rows, by_columns, by_tensors = (line["inputs"] for line in read_lines(path))
    assert by_rows[0] == {"customer_id": digest, "email": REDACTED, "tenure": 3}
    assert by_rows[1]["customer_id"] not in (digest, "C-2002")
    assert by_columns == {
        "customer_id": [digest, mask.digest("C-3003")],
        "email": [REDACTED, None],
        "tenure": [3, 5],
    }
    assert [t["data"] for t in by_tensors["inputs"]] == [[digest], [REDACTED], [3]]
    # The caller's inputs are left as they were.
    assert rows[0]["email"] == "ann@example.org"


def test_digests_depend_on_the_salt_and_join_equal_values() -> None:
    one, other = FieldMask(hashed={"id"}, salt=b"a"), FieldMask(hashed={"id"}, salt=b"b")
    assert one.apply({"id": 42}) == one.apply({"id": "42"}) == {"id": one.digest(42)}
    assert one.digest(42) != other.digest(42)
    assert len(one.digest("x")) == 64
    with pytest.raises(ValueError, match="salt"):
        FieldMask(hashed={"id"})


def test_a_stuck_sink_never_blocks_offer_and_the_overflow_is_counted() -> None:
    registry = CollectorRegistry()
    sink = GatedSink()
    stream = InferenceLog(sink, registry, queue_size=4)
    try:
        stream.offer(lambda: make(0))
        assert sink.entered.wait(10), "the writer never took the first record"
        for i in range(1, 21):  # returns every time although the sink is stuck: the test gets past it
            stream.offer(lambda i=i: make(i))
        assert count(registry, "dropped") == 16
    finally:
        sink.gate.set()
        stream.close(10)
    assert [r.request_id for r in sink.written] == [f"req-{i:05d}" for i in range(5)]
    assert count(registry, "written") == 5
    assert count(registry, "failed") == 0


def test_close_counts_what_a_stuck_sink_could_not_take_as_dropped() -> None:
    registry = CollectorRegistry()
    sink = GatedSink()
    stream = InferenceLog(sink, registry, queue_size=100, batch_size=1)
    try:
        stream.offer(lambda: make(0))
        assert sink.entered.wait(10)
        for i in range(1, 10):
            stream.offer(lambda i=i: make(i))
        stream.close(0.05)
        assert count(registry, "dropped") == 9
        stream.offer(lambda: make(99))  # after close: dropped, not queued
        assert count(registry, "dropped") == 10
    finally:
        sink.gate.set()
    stream._thread.join(10)
    assert not stream._thread.is_alive()
    assert [r.request_id for r in sink.written] == ["req-00000"]
    assert count(registry, "written") == 1


def test_close_flushes_everything_queued(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    stream = InferenceLog(JsonLinesSink(path), registry, batch_size=7)
    for i in range(500):
        stream.offer(lambda i=i: make(i))
    stream.close(30)
    assert len(path.read_text().splitlines()) == 500
    assert count(registry, "written") == 500


def test_sink_errors_are_counted_and_logged_once_without_payload(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    sink = FailingSink()
    stream = InferenceLog(sink, registry, batch_size=1)
    with caplog.at_level(logging.WARNING, logger="model_api.inference_log"):
        for i in range(10):
            stream.offer(lambda i=i: make(i))
        stream.close(10)
    assert sink.calls == 10
    assert count(registry, "failed") == 10
    warnings = [r for r in caplog.records if r.name.startswith("model_api.inference_log")]
    assert len(warnings) == 1
    assert "RuntimeError" in warnings[0].getMessage()
    assert "secret-payload-value" not in caplog.text


def test_a_failing_record_builder_is_counted_not_raised() -> None:
    registry = CollectorRegistry()
    stream = InferenceLog(GatedSink(), registry)

    def broken() -> InferenceRecord:
        raise KeyError("x")

    stream.offer(broken)
    stream.close(1)
    assert count(registry, "failed") == 1


def test_records_that_are_not_json_able_fail_alone(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    stream = InferenceLog(JsonLinesSink(path), registry)
    stream.offer(lambda: make(0))
    stream.offer(lambda: make(1, inputs={"when": object()}))
    stream.offer(lambda: make(2))
    stream.close(10)
    assert [r["request_id"] for r in read_lines(path)] == ["req-00000", "req-00002"]
    assert (count(registry, "written"), count(registry, "failed")) == (2, 1)


def test_build_follows_the_settings(tmp_path: Path) -> None:
    assert build_inference_log(Settings(), CollectorRegistry()) is None
    settings = Settings(
        inference_log="file",
        inference_log_path=str(tmp_path / "log-{pid}.jsonl"),
        inference_log_sample_rate=0.5,
        inference_log_redact="email",
        inference_log_hash="customer_id, phone",
        inference_log_hash_salt=SecretStr("pepper"),
    )
    stream = build_inference_log(settings, CollectorRegistry())
    assert stream is not None
    try:
        assert isinstance(stream.sink, JsonLinesSink)
        assert stream.sink.path.name.startswith("log-") and "{pid}" not in stream.sink.path.name
        assert stream.sample_rate == 0.5
        assert stream.mask.redact == {"email"} and stream.mask.hashed == {"customer_id", "phone"}
    finally:
        stream.close(1)
    http = build_inference_log(
        Settings(inference_log="http", inference_log_url="http://127.0.0.1:9/events"), CollectorRegistry()
    )
    assert http is not None
    assert isinstance(http.sink, CloudEventsSink)
    http.close(1)


def test_build_refuses_configurations_that_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="salt"):
        build_inference_log(
            Settings(inference_log="file", inference_log_path=str(tmp_path / "x"), inference_log_hash="id"),
            CollectorRegistry(),
        )
    with pytest.raises(ValueError, match="INFERENCE_LOG_URL"):
        build_inference_log(Settings(inference_log="http"), CollectorRegistry())
    with pytest.raises(ValueError, match="http"):
        CloudEventsSink("ftp://127.0.0.1/x")


def test_records_are_built_in_the_writer_thread_from_the_values_offered(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    stream = InferenceLog(JsonLinesSink(path), registry)
    built_in: list[threading.Thread] = []

    def build(index: int, inputs: Any) -> InferenceRecord:
        built_in.append(threading.current_thread())
        return make(index, inputs=inputs)

    stream.offer(build, 7, {"tenure": 7})
    stream.close(10)
    assert [line["inputs"] for line in read_lines(path)] == [{"tenure": 7}]
    assert built_in == [stream._thread]  # not the caller's thread: the request path only appends


def test_an_offer_wakes_an_idle_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An idle writer that only woke on its timer would not write within the wait below.
    monkeypatch.setattr("model_api.inference_log.stream.IDLE_WAIT_S", 3600.0)
    registry = CollectorRegistry()
    stream = InferenceLog(JsonLinesSink(tmp_path / "inference.jsonl"), registry, linger_s=0.0)
    try:
        wait_until(lambda: stream._pending.idle, 30, "the writer to wait on its empty queue")
        stream.offer(lambda: make(0))
        wait_until(lambda: count(registry, "written") == 1, 30, "the offer to be written")
    finally:
        stream.close(10)


@pytest.mark.parametrize("seconds", [0.0, 0.9999996, 1.0005, 1764523269.1239, 1764523269.4359994, 4e9 + 0.5])
def test_utc_time_writes_what_datetime_writes(seconds: float) -> None:
    expected = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert utc_time(seconds) == expected


def test_a_record_as_a_dict_has_every_field_in_order() -> None:
    record = make(3)
    assert list(record.to_dict()) == [f.name for f in dataclasses.fields(InferenceRecord)]
    assert record.to_dict() == {f.name: getattr(record, f.name) for f in dataclasses.fields(InferenceRecord)}
