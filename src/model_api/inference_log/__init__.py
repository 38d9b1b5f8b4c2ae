"""Inference logs: an opt-in, sampled stream of what the model saw and said, one record a request.

Separate from the service log (which never carries payloads): records go to a rotated JSON Lines
file or, as KServe-style CloudEvents, to an HTTP collector, through a bounded queue that drops
rather than slows a request. `build_inference_log(settings, registry)` makes the configured one.

    record.py  InferenceRecord, FieldMask (redact / hash named input fields)
    sinks.py   JsonLinesSink, CloudEventsSink, SinkError
    stream.py  InferenceLog: sample, queue, write in a background thread, count
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry

from model_api.inference_log.record import (
    REDACTED,
    FieldMask,
    InferenceRecord,
    parse_names,
    utc_now,
    utc_time,
)
from model_api.inference_log.sinks import (
    REQUEST_EVENT,
    RESPONSE_EVENT,
    CloudEventsSink,
    JsonLinesSink,
    Sink,
    SinkError,
)
from model_api.inference_log.stream import InferenceLog
from model_api.settings import Settings

__all__ = [
    "REDACTED",
    "REQUEST_EVENT",
    "RESPONSE_EVENT",
    "CloudEventsSink",
    "FieldMask",
    "InferenceLog",
    "InferenceRecord",
    "JsonLinesSink",
    "Sink",
    "SinkError",
    "build_inference_log",
    "utc_now",
    "utc_time",
]


def build_inference_log(settings: Settings, registry: CollectorRegistry) -> InferenceLog | None:
    """The inference log `settings` ask for, counting into `registry`; None when it is off.

    Raises ValueError for a configuration that cannot work: hashed fields without a salt, or
    "http" without a URL. Call `close(timeout_s)` on the result at shutdown."""
    if settings.inference_log == "off":
        return None
    salt = settings.inference_log_hash_salt
    mask = FieldMask(
        redact=parse_names(settings.inference_log_redact),
        hashed=parse_names(settings.inference_log_hash),
        salt=salt.get_secret_value().encode() if salt else b"",
    )
    sink: Sink
    if settings.inference_log == "file":
        path = settings.inference_log_path.replace("{pid}", str(os.getpid()))
        sink = JsonLinesSink(Path(path), settings.inference_log_max_bytes, settings.inference_log_backups)
    else:
        if not settings.inference_log_url:
            raise ValueError("MODEL_API_INFERENCE_LOG=http needs MODEL_API_INFERENCE_LOG_URL")
        sink = CloudEventsSink(
            settings.inference_log_url,
            settings.inference_log_timeout_s,
            source=f"urn:model-api:{socket.gethostname()}",
        )
    return InferenceLog(
        sink,
        registry,
        sample_rate=settings.inference_log_sample_rate,
        queue_size=settings.inference_log_queue_size,
        mask=mask,
    )
