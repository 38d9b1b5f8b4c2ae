"""The HTTP registry path: a real `mlflow server`, a model registered through it, then served."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_api.demo import ensure_demo_model
from tests.support import free_port, running_service, service_env, stop, wait_until


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-server")
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
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 120, "mlflow server", interval=0.5)
        yield url
    finally:
        stop(process)


def test_model_registered_over_http_is_served(mlflow_server: str, tmp_path: Path) -> None:
    demo = ensure_demo_model(mlflow_server, tmp_path / "unused", n_rows=800, n_trees=10)
    assert demo.created
    env = service_env(mlflow_server, free_port(), MODEL_API_MODEL_URI=f"models:/{demo.name}/{demo.version}")
    with running_service(env, tmp_path / "server.log") as server:
        info = httpx.get(f"{server.url}/model/info", timeout=5).json()
        assert info["version"] == demo.version and info["run_id"] == demo.run_id
        assert info["source"].startswith("mlflow-artifacts:")
        response = httpx.post(f"{server.url}/predict", json={"instances": info["input_example"]}, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == len(info["input_example"])
