"""The `model-api` command: serve, build the demo model, or probe a running server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_api.logs import configure_logging, logging_config
from model_api.settings import Settings

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger("model_api")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STARTUP_FAILURE = 3  # uvicorn's exit code for a server that could not start


def _serve(args: argparse.Namespace) -> int:
    settings = Settings()
    from model_api.middleware.api_keys import ApiKeysError, load_api_keys

    try:
        load_api_keys(settings)  # here, so a bad keys file is one clear line, not a traceback per worker
    except ApiKeysError as exc:
        logger.error("startup failed: %s", exc)
        return STARTUP_FAILURE
    if settings.workers > 1 or MULTIPROC_ENV in os.environ:
        # prometheus_client picks multiprocess mode when it is first imported, so the directory is
        # set (and emptied of a previous run's files) before anything here imports it.
        os.environ[MULTIPROC_ENV] = settings.multiproc_dir
        from model_api.metrics import reset_multiproc_dir

        reset_multiproc_dir(Path(settings.multiproc_dir))

    import uvicorn

    # uvicorn drains on SIGTERM and then re-raises it against the handler it found, which would end
    # a cleanly drained process with -15. A drained stop is a clean exit: 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    options: dict[str, Any] = {
        "factory": True,
        "host": args.host or settings.host,
        "port": args.port or settings.port,
        "log_config": logging_config(settings.log_level, settings.log_format),
        "log_level": settings.log_level,
        "access_log": False,  # the access middleware logs each request once, with its request id
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
        "server_header": False,  # no "Server: uvicorn" for a scanner to match versions against
        # uvicorn's httptools protocol, one write per connection and loop iteration (http_protocol.py)
        "http": "model_api.http_protocol:CoalescingHttpToolsProtocol",
    }
    if settings.workers == 1:
        uvicorn.run("model_api.main:create_app", **options)
        return 0
    return _supervise(uvicorn.Config("model_api.main:create_app", workers=settings.workers, **options))


def _supervise(config: uvicorn.Config) -> int:
    """Run several workers; a worker that dies is replaced and its live gauges dropped.

    uvicorn.run would exit 0 when the workers cannot load the model; this exits non-zero.
    """
    from prometheus_client.multiprocess import mark_process_dead
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            before = {p.pid for p in self.processes}
            super().keep_subprocess_alive()
            for pid in before - {p.pid for p in self.processes}:
                if pid is not None:
                    mark_process_dead(pid)  # type: ignore[no-untyped-call]

    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return STARTUP_FAILURE if failed else 0


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
        settings = Settings()
        configure_logging(settings.log_level, settings.log_format)
        # MLflow would install a text handler of its own at import; its records go through ours.
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
