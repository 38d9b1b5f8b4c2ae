"""Logging setup for the service and the server it runs in."""

from __future__ import annotations

import logging
import logging.config
from typing import Any


class _DropReportedStartupFailure(logging.Filter):
    """The lifespan already logged one clear line for a model that cannot load; drop uvicorn's
    traceback of the same failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Traceback") and "model_api.errors." in message)


def logging_config(level: str = "info") -> dict[str, Any]:
    """A dictConfig for the service, uvicorn and the noisy libraries under them."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"startup": {"()": _DropReportedStartupFailure}},
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "text",
                "filters": ["startup"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            "uvicorn": {"level": upper},
            "uvicorn.access": {"level": upper},
            "alembic": {"level": "WARNING"},
            "mlflow": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "info") -> None:
    logging.config.dictConfig(logging_config(level))
