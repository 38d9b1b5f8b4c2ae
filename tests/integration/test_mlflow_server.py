"""The HTTP registry path: a real `mlflow server`, a model registered through it, then served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_api.demo import ensure_demo_model
from tests.support import free_port, mlflow_server_process, running_service, service_env, stop, wait_until


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server_process(tmp_path_factory.mktemp("mlflow-server")) as (url, _):
        yield url


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


def test_a_registry_outage_while_polling_leaves_serving_unharmed(tmp_path: Path) -> None:
    with mlflow_server_process(tmp_path / "mlflow") as (registry_url, registry):
        demo = ensure_demo_model(registry_url, tmp_path / "unused", n_rows=800, n_trees=5)
        env = service_env(registry_url, free_port(), MODEL_API_RELOAD_INTERVAL_S="0.5")
        with running_service(env, tmp_path / "server.log") as server:
            rows = httpx.get(f"{server.url}/model/info", timeout=5).json()["input_example"]
            stop(registry)  # the registry goes away while the service polls it

            def outage_seen() -> bool:
                rollout = httpx.get(f"{server.url}/model/info", timeout=5).json()["rollout"]
                return bool(rollout["last_outcome"] == "failed" and "registry" in rollout["last_error"])

            wait_until(outage_seen, 60, "the failed check to show in /model/info")
            for _ in range(5):
                response = httpx.post(f"{server.url}/predict", json={"instances": rows}, timeout=10)
                assert response.status_code == 200 and response.json()["model_version"] == demo.version
            assert httpx.get(f"{server.url}/ready", timeout=5).status_code == 200
            metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
            assert 'model_reloads_total{outcome="failed"}' in metrics
        assert "cannot check" in server.log() and "still serving version 1" in server.log()
