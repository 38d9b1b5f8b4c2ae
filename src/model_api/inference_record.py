"""The inference record of one answered request, from what the data plane's `Admission` holds.

`Watch.answered` (`watch.py`) gathers on the request path only what a record is built from
(`answer_of` the answer or the error, the request id, route, payload, latency and time) and hands
it to the inference log, whose writer thread calls `build_record`: bodies kept as bytes are
parsed there (`jsonable_body`), not on the event loop. `make_record` builds one from an admission.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from model_api.errors import ServingError
from model_api.inference_log import InferenceRecord, utc_time
from model_api.predictor import Predictor

if TYPE_CHECKING:
    from model_api.dataplane import Admission


def make_record(
    admission: Admission, exc: BaseException | None, latency_ms: float, answered_at: float | None = None
) -> InferenceRecord:
    """The inference record of one request; `answered_at` is when it was answered, in
    `time.time()` seconds (now when None)."""
    status, outputs = answer_of(admission.answer, exc)
    return build_record(
        admission.request_id,
        admission.predictor,
        admission.route,
        admission.payload,
        outputs,
        status,
        latency_ms,
        time.time() if answered_at is None else answered_at,
    )


def answer_of(answer: Any, exc: BaseException | None) -> tuple[int, Any]:
    """(status code, outputs) of a request that left with `answer` (what its route rendered) or
    `exc`: a ServingError's code and message (written for clients), any other error's code only."""
    if exc is None:
        return 200, answer
    if isinstance(exc, ServingError):
        return exc.status_code, {"error": {"code": exc.code, "message": str(exc)}}
    return 500, {"error": {"code": "internal_error"}}


def build_record(
    request_id: str | None,
    predictor: Predictor,
    route: str,
    payload: Any,
    outputs: Any,
    status: int,
    latency_ms: float,
    answered_at: float,
) -> InferenceRecord:
    """The inference record of one request from what `Watch.answered` offers the log (called for
    a sampled request only, in the log's writer thread: parsing bytes bodies happens there)."""
    return InferenceRecord(
        request_id=request_id or "",
        model_name=predictor.name,
        model_version=predictor.version or "",
        route=route,
        inputs=jsonable_body(payload),
        outputs=jsonable_body(outputs),
        latency_ms=round(latency_ms, 3),
        status_code=status,
        time=utc_time(answered_at),
    )


def jsonable_body(value: Any) -> Any:
    """A body as the record keeps it: JSON bytes (a JSON body, a rendered answer) parsed, so the
    field mask can find named fields in them; other bytes as text (CSV) or, when not text
    (Parquet), their size; values as they are."""
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        try:
            return data.decode()
        except UnicodeDecodeError:
            return {"bytes": len(data)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
