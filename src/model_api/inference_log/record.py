"""One inference record, and the field mask that redacts or hashes named input fields.

A record is what one answered request leaves in the inference log: request id (the same id the
access line and the answer carry), UTC time, model name and version, route, inputs and outputs
(JSON-able values, as the protocol received and answered them), latency in milliseconds and the
HTTP status code.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

REDACTED = "[redacted]"
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def utc_now() -> str:
    """The current time as RFC 3339 / ISO 8601 in UTC with milliseconds: 2026-11-30T17:21:09.123Z."""
    return utc_time(time.time())


def utc_time(seconds: float) -> str:
    """`seconds` since the epoch (`time.time()`) as `utc_now` writes it. A request takes its
    `time.time()` when answered (a float, cheap on the request path) and the writer thread formats
    it: the date and time of day once a second (datetime's isoformat took 2 us a record)."""
    whole = math.floor(seconds)
    fraction = round((seconds - whole) * 1_000_000)  # to the microsecond as datetime rounds, then cut
    if fraction >= 1_000_000:
        whole, fraction = whole + 1, fraction - 1_000_000
    return f"{_second_text(whole)}.{fraction // 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_text(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceRecord:
    """One answered request. `inputs` and `outputs` must be JSON-able (numpy arrays are accepted);
    `latency_ms` is the server's time for the request in milliseconds; `time` is when it was answered."""

    request_id: str
    model_name: str
    model_version: str
    route: str
    inputs: Any
    outputs: Any
    latency_ms: float
    status_code: int
    time: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        """The record as one JSON object (the shape of a JSON Lines line); inputs and outputs are
        shared, not copied (dataclasses.asdict would deep-copy them: most of a record's cost). Keys
        in the order of FIELDS, written out: half the cost of a loop over them, once a record."""
        return {
            "request_id": self.request_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "route": self.route,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "latency_ms": self.latency_ms,
            "status_code": self.status_code,
            "time": self.time,
        }

    def masked(self, mask: FieldMask) -> InferenceRecord:
        """A copy whose inputs went through `mask`."""
        if not mask:
            return self
        return InferenceRecord(
            request_id=self.request_id,
            model_name=self.model_name,
            model_version=self.model_version,
            route=self.route,
            inputs=mask.apply(self.inputs),
            outputs=self.outputs,
            latency_ms=self.latency_ms,
            status_code=self.status_code,
            time=self.time,
        )


FIELDS = tuple(f.name for f in fields(InferenceRecord))


def parse_names(text: str) -> frozenset[str]:
    """'a, b,,c' -> {'a', 'b', 'c'}: the comma-separated field names of a setting."""
    return frozenset(name.strip() for name in text.split(",") if name.strip())


class FieldMask:
    """Replaces named input fields wherever they appear: redacted ones by "[redacted]", hashed ones
    by the HMAC-SHA256 hex digest of the value keyed by the salt, so equal values give equal digests
    (records still join on them) but the value cannot be read back or guessed without the salt.

    Fields are found by name in every shape our protocols carry: a record's key ({"email": ...},
    records and V1 instances as objects), a column's key ({"email": [...]}, each value masked) and
    an Open Inference Protocol tensor named after the field ({"name": "email", "data": [...]}).
    Missing values (None) stay None. A field named in both sets is redacted. The input is not
    modified; a masked copy is returned.
    """

    def __init__(self, redact: Iterable[str] = (), hashed: Iterable[str] = (), salt: bytes = b"") -> None:
        self.redact = frozenset(redact)
        self.hashed = frozenset(hashed) - self.redact
        self._fields = self.redact | self.hashed
        if self.hashed and not salt:
            raise ValueError(
                "hashing fields needs a salt: without one, a digest of a known value is a lookup"
            )
        self._keyed = hmac.new(salt, digestmod=hashlib.sha256)  # copied per value: cheaper than new()

    def __bool__(self) -> bool:
        return bool(self._fields)

    def apply(self, value: Any) -> Any:
        """`value` with every named field replaced."""
        return self._walk(value) if self._fields else value

    def digest(self, value: Any) -> str:
        """The hex digest a hashed field's value becomes (strings hash their UTF-8 text, other
        values their JSON text, so "42" and 42 join)."""
        data = value.encode() if isinstance(value, str) else orjson.dumps(value, option=JSON_OPTIONS)
        keyed = self._keyed.copy()
        keyed.update(data)
        return keyed.hexdigest()

    def _walk(self, value: Any) -> Any:
        if isinstance(value, dict):
            name = value.get("name")
            if isinstance(name, str) and name in self._fields and "data" in value:
                return {k: self._mask(name, v) if k == "data" else v for k, v in value.items()}
            return {k: self._mask(k, v) if k in self._fields else self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value

    def _mask(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list | tuple):
            return [self._mask(name, v) for v in value]
        if hasattr(value, "tolist"):  # a numpy array or scalar: mask its plain Python values
            return self._mask(name, value.tolist())
        return REDACTED if name in self.redact else self.digest(value)
