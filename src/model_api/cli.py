"""The `model-api` command: serve, build the demo model, or probe a running server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import urllib.request
from pathlib import Path

from model_api.logs import configure_logging, logging_config
from model_api.settings import Settings

logger = logging.getLogger("model_api")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings()
    # prometheus_client writes per-process files there and refuses a folder that is missing; in the
    # image it is under /tmp, a fresh tmpfs on a read-only root.
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        Path(multiproc_dir).mkdir(parents=True, exist_ok=True)
    # uvicorn drains on SIGTERM and then re-raises it against the handler it found, which would end
    # a cleanly drained process with -15. A drained stop is a clean exit: 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    host = args.host or settings.host
    port = args.port or settings.port
    uvicorn.run(
        "model_api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from model_api.demo import ensure_demo_model

    settings = Settings()
    tracking_uri = args.tracking_uri or settings.tracking_uri
    demo = ensure_demo_model(tracking_uri, Path(args.artifacts))
    verb = "registered" if demo.created else "found"
    print(f"{verb} models:/{demo.name}@{demo.alias} (version {demo.version}) in {tracking_uri}")
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    # The container's HEALTHCHECK runs this with no URL: it follows MODEL_API_PORT.
    url = args.url or f"http://127.0.0.1:{Settings().port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the configured model (MODEL_API_* settings)")
    serve.add_argument("--host", default=None, help="overrides MODEL_API_HOST")
    serve.add_argument("--port", type=int, default=None, help="overrides MODEL_API_PORT")
    serve.set_defaults(run=_serve)
    demo = commands.add_parser("demo", help="train and register the demo churn model if missing")
    demo.add_argument("--tracking-uri", default=None, help="overrides MLFLOW_TRACKING_URI")
    demo.add_argument("--artifacts", default="data/artifacts", help="where the model files go")
    demo.set_defaults(run=_demo)
    health = commands.add_parser("healthcheck", help="exit 0 when the server answers /health")
    health.add_argument("--url", default=None, help="default: http://127.0.0.1:$MODEL_API_PORT/health")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(run=_healthcheck)
    args = parser.parse_args(argv)
    if args.command != "healthcheck":
        configure_logging(Settings().log_level)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
