"""Test helpers: a real registry, free ports, real servers in threads and processes, bounded waits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from model_api.demo import DemoModel, ensure_demo_model
from model_api.registry import LoadedModel, load_model

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    """A real sqlite MLflow registry in a temporary folder, holding the demo model."""

    tracking_uri: str
    root: Path
    demo: DemoModel

    def load(self, uri: str | None = None) -> LoadedModel:
        return load_model(uri or f"models:/{self.demo.name}@{self.demo.alias}", self.tracking_uri)


def make_registry(root: Path, n_trees: int = 20) -> Registry:
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    demo = ensure_demo_model(tracking_uri, root / "artifacts", n_rows=1500, n_trees=n_trees)
    return Registry(tracking_uri, root, demo)


def answers_ok(url: str) -> bool:
    """Whether `url` answers 200 now (a server still starting may refuse the connection)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def server_in_thread(app: Any, timeout: float = 60.0, http: Any = "auto") -> Iterator[str]:
    """Run `app` under a real uvicorn server in a thread on a free loopback port; `http` is
    uvicorn's HTTP protocol (its own by default; `model-api serve` runs http_protocol.py's)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout, "the server to start")
        assert server.started, "the server failed to start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class ServerProcess:
    """A `model-api serve` process on a free loopback port."""

    process: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def service_env(tracking_uri: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_API_", "MLFLOW_"))}
    env |= {"MLFLOW_TRACKING_URI": tracking_uri, "MODEL_API_PORT": str(port), "MODEL_API_HOST": "127.0.0.1"}
    env |= extra
    return env


def start_service(env: dict[str, str], log_path: Path) -> ServerProcess:
    port = env["MODEL_API_PORT"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "model_api.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=log_path.parent,
        )
    return ServerProcess(process, f"http://127.0.0.1:{port}", log_path)


def wait_ready(server: ServerProcess, timeout: float = 90.0) -> None:
    def ready() -> bool:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        return answers_ok(f"{server.url}/ready")

    wait_until(ready, timeout, "the server to be ready", interval=0.25)


def stop(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return int(process.returncode)


@contextmanager
def running_service(env: dict[str, str], log_path: Path, timeout: float = 90.0) -> Iterator[ServerProcess]:
    server = start_service(env, log_path)
    try:
        wait_ready(server, timeout)
        yield server
    finally:
        stop(server.process)


def register_version(registry_uri: str, artifacts: Path, *, seed: int, n_trees: int = 5) -> str:
    """Register another version of the demo model (same contract, other trees), alias untouched."""
    from model_api.demo import MODEL_NAME, build_pipeline, make_churn_table
    from model_api.registration import register_sklearn_model

    frame, label = make_churn_table(800, seed=seed)
    pipeline = build_pipeline(n_trees, seed=seed).fit(frame, label)
    registered = register_sklearn_model(
        pipeline,
        tracking_uri=registry_uri,
        name=MODEL_NAME,
        alias=None,
        experiment="churn-demo",
        artifact_dir=artifacts,
        input_example=frame.head(3),
        params={"seed": seed},
        metrics={},
    )
    return registered.version


@contextmanager
def mlflow_server_process(
    root: Path, timeout: float = 120.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `mlflow server` on a free loopback port, with a sqlite store and proxied artifacts."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (root / "mlflow.log").open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{root}/mlflow.db",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, (root / "mlflow.log").read_text()
        return answers_ok(f"{url}/health")

    try:
        wait_until(up, timeout, "mlflow server", interval=0.5)
        yield url, process
    finally:
        stop(process)


def log_entries(log: str) -> list[dict[str, Any]]:
    """Parse a JSON-lines log; a line that is not a JSON object fails the test (the format is a contract)."""
    entries = []
    for line in log.splitlines():
        if line.strip():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            entries.append(entry)
    return entries


def locust_command(
    host: str, *, users: int, spawn_rate: int, run_time_s: int, csv_prefix: Path, stop_timeout_s: int = 10
) -> list[str]:
    """The project's locustfile, headless, against `host`, with CSV stats at `csv_prefix`."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate),
        "--run-time",
        f"{run_time_s}s",
        "--stop-timeout",
        str(stop_timeout_s),
        "--csv",
        str(csv_prefix),
    ]


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text page (0 when absent)."""
    return metric_samples(text).get((name, frozenset(labels.items())), 0.0)
