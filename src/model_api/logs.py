"""Logging setup for the service and the server it runs in: JSON lines by default, text for a terminal."""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

# The request id of the request being answered, for every log line written while it is; set by
# the access middleware.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Fields the access middleware attaches to its records (logging's `extra`), in output order.
ACCESS_FIELDS = ("request_id", "method", "route", "status", "duration_ms", "error_code")


class _DropReportedStartupFailure(logging.Filter):
    """The lifespan already logged one clear line for a model that cannot load; drop uvicorn's
    traceback of the same failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs it at error level: a record below (an access line) passes unformatted
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not (message.startswith("Traceback") and "model_api.errors." in message)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id of the request being
    answered, the access fields when present, and the traceback of an exception."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")
        """The last second rendered, and its text (one tuple: read and replaced whole)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in ACCESS_FIELDS:
            value = fields.get(key)
            if value is not None:
                out[key] = value
        if "request_id" not in out and (rid := request_id_var.get()) is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()

    def _time(self, created: float) -> str:
        """`created` (seconds since the epoch) in ISO 8601, UTC, to the millisecond: what
        `datetime.isoformat(timespec="milliseconds")` gives, with the date and time of the second
        rendered once per second (a line per request: about 2 -> 0.7 us, timed alone)."""
        if created < 0:  # a clock before 1970: int() would round toward zero
            return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        second = int(created)
        micros = round((created - second) * 1e6)  # as datetime rounds a timestamp: to the microsecond
        if micros == 1_000_000:
            second, micros = second + 1, 0
        cached, text = self._second
        if second != cached:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"


def logging_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A dictConfig for the service, uvicorn and the noisy libraries under them."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"startup": {"()": _DropReportedStartupFailure}},
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json" if fmt == "json" else "text",
                "filters": ["startup"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            "uvicorn": {"level": upper},
            # The access middleware writes one line per request; uvicorn's own would double it.
            "uvicorn.access": {"level": "WARNING"},
            "alembic": {"level": "WARNING"},
            "mlflow": {"level": "WARNING"},
        },
    }


def skip_unused_record_fields() -> None:
    """Stop the logging module from collecting what no format here prints: the caller's file and
    line (a walk up a deep ASGI stack on every access line), thread, process and task names.
    The optimisations the logging HOWTO lists; process-wide, so called once per server process."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    logging.config.dictConfig(logging_config(level, fmt))
