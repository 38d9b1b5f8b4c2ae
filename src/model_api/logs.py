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
        message = record.getMessage()
        return not (message.startswith("Traceback") and "model_api.errors." in message)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id of the request being
    answered, the access fields when present, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ACCESS_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if "request_id" not in out and (rid := request_id_var.get()) is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


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
