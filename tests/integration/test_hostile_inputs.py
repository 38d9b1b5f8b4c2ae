"""A corpus of hostile requests against a real `model-api serve` process.

Each gets its documented 4xx in the one error shape, leaks nothing (no stack trace, file path,
library exception name or echo of the input), and the server then still answers a valid request
correctly.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from model_api.registry import LoadedModel
from tests.support import Registry, ServerProcess, free_port, running_service, service_env

MARKER = "MARKER-7f3a9c"
"""Planted in hostile payloads: it must never come back."""
LEAKS = [
    "Traceback",
    'File "',
    ".py",
    "site-packages",
    "/tmp",
    "/usr",
    "Error:",
    "ValueError",
    "TypeError",
    "KeyError",
    "JSONDecodeError",
    "orjson",
    "numpy",
    "pandas",
    "sklearn",
    MARKER,
]
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Case:
    """One hostile request: how to build its body from a valid row, and the documented answer."""

    body: Callable[[dict[str, Any], list[str]], bytes | Iterator[bytes]]
    status: int
    code: str | None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def records(row: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def with_row(**changes: Any) -> Callable[[dict[str, Any], list[str]], bytes]:
    return lambda row, names: json.dumps({"instances": [row | changes]}).encode()


def text(raw: str) -> Callable[[dict[str, Any], list[str]], bytes]:
    return lambda row, names: raw.encode()


def literal(feature: str, value: str) -> Callable[[dict[str, Any], list[str]], bytes]:
    """A row whose `feature` is the raw JSON text `value` (what json.dumps cannot write)."""
    return lambda row, names: (
        json.dumps({"instances": [row | {feature: "@@"}]}).replace('"@@"', value).encode()
    )


def nested(depth: int) -> Callable[[dict[str, Any], list[str]], bytes]:
    return lambda row, names: b'{"features": ' + b"[" * depth + b"]" * depth + b"}"


def chunked(total: int) -> Callable[[dict[str, Any], list[str]], Iterator[bytes]]:
    def body(row: dict[str, Any], names: list[str]) -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(total // 65536):
            yield b" " * 65536

    return body


ROW_TEN_MB = 10 * 1024 * 1024

CASES: dict[str, Case] = {
    # malformed and truncated JSON
    "truncated": Case(text('{"instances": [{"tenure_months": 1'), 400, "malformed_json"),
    "unquoted keys": Case(text("{instances: []}"), 400, "malformed_json"),
    "not json": Case(text(f"hello {MARKER}"), 400, "malformed_json"),
    "empty body": Case(text(""), 400, "malformed_json"),
    "trailing garbage": Case(lambda r, n: records(r, [r]) + MARKER.encode(), 400, "malformed_json"),
    "invalid utf-8": Case(lambda r, n: b'{"instances": [{"contract": "\xff\xfe"}]}', 400, "malformed_json"),
    "byte order mark": Case(lambda r, n: b"\xef\xbb\xbf" + records(r, [r]), 400, "malformed_json"),
    "lone surrogate": Case(text('{"instances": [{"contract": "\\ud800"}]}'), 400, "malformed_json"),
    # the wrong shape
    "top-level array": Case(lambda r, n: json.dumps([r]).encode(), 422, "invalid_input"),
    "top-level null": Case(text("null"), 422, "invalid_input"),
    "top-level string": Case(text(json.dumps(MARKER)), 422, "invalid_input"),
    "empty object": Case(text("{}"), 422, "invalid_input"),
    "both forms": Case(
        lambda r, n: json.dumps({"instances": [r], "features": [[]]}).encode(), 422, "invalid_input"
    ),
    "unknown top-level key": Case(
        lambda r, n: json.dumps({"instances": [r], f"<b>{MARKER}</b>": 1}).encode(), 422, "invalid_input"
    ),
    "empty batch": Case(text('{"instances": []}'), 422, "invalid_input"),
    "empty row": Case(text('{"instances": [{}]}'), 422, "invalid_input"),
    "null row": Case(text('{"instances": [null]}'), 422, "invalid_input"),
    "null ordered row": Case(text('{"features": [null]}'), 422, "invalid_input"),
    "row of the wrong length": Case(text('{"features": [[1, 2]]}'), 422, "invalid_input"),
    "probabilities as a string": Case(
        lambda r, n: json.dumps({"instances": [r], "return_probabilities": "yes"}).encode(),
        422,
        "invalid_input",
    ),
    # wrong types everywhere
    "every feature a list": Case(
        lambda r, n: json.dumps({"instances": [{k: [v] for k, v in r.items()}]}).encode(),
        422,
        "invalid_input",
    ),
    "every feature an object": Case(
        lambda r, n: json.dumps({"instances": [{k: {"v": MARKER} for k in r}]}).encode(), 422, "invalid_input"
    ),
    "every feature null": Case(
        lambda r, n: json.dumps({"instances": [dict.fromkeys(r)]}).encode(), 422, "invalid_input"
    ),
    "numbers as strings": Case(with_row(tenure_months="12", monthly_charges="9.5"), 422, "invalid_input"),
    "boolean for an integer": Case(with_row(tenure_months=True), 422, "invalid_input"),
    "number for a category": Case(with_row(contract=1), 422, "invalid_input"),
    # huge and tiny numbers, NaN and Infinity
    "integer beyond int64": Case(with_row(tenure_months=10**30), 422, "invalid_input"),
    "integer literal just beyond int64": Case(
        literal("tenure_months", "-9223372036854775809"), 422, "invalid_input"
    ),
    "double beyond float32": Case(with_row(monthly_charges=1e308), 422, "invalid_input"),
    "double overflowing to infinity": Case(literal("monthly_charges", "1e999"), 400, "malformed_json"),
    "NaN": Case(literal("monthly_charges", "NaN"), 400, "malformed_json"),
    "Infinity": Case(literal("monthly_charges", "Infinity"), 400, "malformed_json"),
    "-Infinity": Case(literal("monthly_charges", "-Infinity"), 400, "malformed_json"),
    "smallest subnormal double": Case(with_row(monthly_charges=5e-324), 200, None),
    # deep nesting, long strings, odd names
    "arrays nested 100 000 deep": Case(nested(100_000), 400, "malformed_json"),
    "arrays nested 500 deep": Case(nested(500), 422, "invalid_input"),
    "500 kB category": Case(with_row(contract=MARKER + "x" * 500_000), 422, "invalid_input"),
    "500 kB feature name": Case(
        lambda r, n: json.dumps({"instances": [r | {MARKER + "k" * 500_000: 1}]}).encode(),
        422,
        "invalid_input",
    ),
    "unicode feature name": Case(with_row(**{"tenure_mönths\u200b😀": 1}), 422, "invalid_input"),
    "empty feature name": Case(with_row(**{"": 1}), 422, "invalid_input"),
    "NUL in a category": Case(with_row(contract="month-to-month\u0000"), 422, "invalid_input"),
    "look-alike category": Case(with_row(contract="month\u2010to\u2010month"), 422, "invalid_input"),
    # duplicate keys: the last one wins, as in JavaScript
    "duplicate key, the last invalid": Case(
        lambda r, n: records(r, [r])[:-1] + b', "instances": [{}]}', 422, "invalid_input"
    ),
    "duplicate feature, the last valid": Case(
        lambda r, n: (
            json.dumps({"instances": [r]}).replace('"age": ', f'"age": "{MARKER}", "age": ').encode()
        ),
        200,
        None,
    ),
    # sizes
    "100k empty rows": Case(
        lambda r, n: json.dumps({"features": [[]] * 100_000}).encode(), 413, "too_many_rows"
    ),
    "100k real rows": Case(lambda r, n: records(r, [r] * 100_000), 413, "payload_too_large"),
    "10 MB declared": Case(lambda r, n: b"[" + b" " * ROW_TEN_MB + b"]", 413, "payload_too_large"),
    "10 MB chunked": Case(chunked(ROW_TEN_MB), 413, "payload_too_large"),
    # content types and encodings
    "text/plain": Case(records, 415, "unsupported_media_type", {"content-type": "text/plain"}),
    "form": Case(
        records, 415, "unsupported_media_type", {"content-type": "application/x-www-form-urlencoded"}
    ),
    "multipart": Case(
        records, 415, "unsupported_media_type", {"content-type": "multipart/form-data; boundary=x"}
    ),
    "xml": Case(records, 415, "unsupported_media_type", {"content-type": "application/xml"}),
    "no content type": Case(records, 415, "unsupported_media_type", {}),
    "gzip bomb": Case(
        lambda r, n: gzip.compress(b" " * ROW_TEN_MB),
        415,
        "unsupported_media_type",
        JSON | {"content-encoding": "gzip"},
    ),
    "brotli": Case(records, 415, "unsupported_media_type", JSON | {"content-encoding": "br"}),
    "gzip without saying so": Case(lambda r, n: gzip.compress(records(r, [r])), 400, "malformed_json"),
}


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = service_env(registry.tracking_uri, free_port())
    with running_service(env, tmp_path_factory.mktemp("hostile") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def valid(server: ServerProcess, champion: LoadedModel) -> tuple[dict[str, Any], list[Any]]:
    """A valid row, and what the model says for it."""
    assert champion.input_example is not None
    row = httpx.get(f"{server.url}/model/info", timeout=10).json()["input_example"][0]
    import pandas as pd

    expected = champion.model.predict(pd.DataFrame([row])).tolist()
    return row, expected


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_request_gets_its_documented_answer_and_the_server_goes_on(
    name: str, server: ServerProcess, valid: tuple[dict[str, Any], list[Any]]
) -> None:
    case = CASES[name]
    row, expected = valid
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/predict", content=case.body(row, list(row)), headers=case.headers)
        assert response.status_code == case.status, response.text[:2000]
        assert len(response.content) < 4096, "an answer never grows with the input"
        for leak in LEAKS:
            assert leak not in response.text, f"{leak!r} in {response.text[:500]}"
        if case.code is not None:
            error = response.json()["error"]
            assert error["code"] == case.code and error["message"]
            assert error["request_id"] == response.headers["x-request-id"]
        after = client.post("/predict", json={"instances": [row]})
        assert after.status_code == 200 and after.json()["predictions"] == expected
    assert server.process.poll() is None, "the server is still running"


def test_the_server_logged_no_unhandled_error(server: ServerProcess) -> None:
    log = server.log()
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
