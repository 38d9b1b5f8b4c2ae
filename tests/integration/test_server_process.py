"""The embedded default end to end: `model-api demo`, then `model-api serve` as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, log_entries, running_service, service_env, start_service, stop


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_api.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder where `model-api demo` builds the embedded default registry."""
    home = tmp_path_factory.mktemp("home")
    env = service_env(f"sqlite:///{home}/data/mlflow.db", free_port())
    first = run_cli(["demo", "--artifacts", "data/artifacts"], env, home)
    assert first.returncode == 0, first.stderr
    assert "registered models:/ChurnPredictor@champion (version 1)" in first.stdout
    again = run_cli(["demo", "--artifacts", "data/artifacts"], env, home)
    assert again.returncode == 0 and "found models:/ChurnPredictor@champion (version 1)" in again.stdout
    return home


def test_the_readme_session_on_the_embedded_default(demo_home: Path) -> None:
    env = service_env(f"sqlite:///{demo_home}/data/mlflow.db", free_port())
    with running_service(env, demo_home / "server.log") as server:
        url = server.url
        assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{url}/ready", timeout=5).json()["model_version"] == "1"
        info = httpx.get(f"{url}/model/info", timeout=5).json()
        assert info["name"] == "ChurnPredictor" and info["alias"] == "champion"
        rows = info["input_example"]
        plain = httpx.post(f"{url}/predict", json={"instances": rows}, timeout=10).json()
        assert len(plain["predictions"]) == len(rows) and set(plain["predictions"]) <= {0, 1}
        names = [c["name"] for c in info["inputs"]]
        ordered = [[r[n] for n in names] for r in rows]
        with_proba = httpx.post(
            f"{url}/predict", json={"features": ordered, "return_probabilities": True}, timeout=10
        ).json()
        assert with_proba["predictions"] == plain["predictions"]
        for probabilities in with_proba["probabilities"]:
            assert abs(sum(probabilities.values()) - 1.0) < 1e-9
        metrics = httpx.get(f"{url}/metrics", timeout=5)
        assert metrics.headers["content-type"].startswith("text/plain")
        assert (
            'predictions_total{model_name="ChurnPredictor",model_version="1",outcome="ok"} 2.0'
            in metrics.text
        )
        code = stop(server.process)
    assert code == 0, server.log()


def startup_failure(tmp_path: Path, **env_extra: str) -> tuple[int, str]:
    tracking = env_extra.pop("tracking", f"sqlite:///{tmp_path}/mlflow.db")
    env = service_env(tracking, free_port(), **env_extra)
    server = start_service(env, tmp_path / "server.log")
    try:
        code = server.process.wait(timeout=120)
    finally:
        stop(server.process)
    return code, server.log()


def error_lines(log: str) -> list[str]:
    """The service's ERROR messages; the log is JSON lines (the default format)."""
    return [
        entry["message"]
        for entry in log_entries(log)
        if entry["level"] == "ERROR" and entry["logger"].startswith("model_api")
    ]


def test_unknown_model_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    code, log = startup_failure(tmp_path, MODEL_API_MODEL_URI="models:/NoSuchModel@champion")
    assert code != 0
    [line] = error_lines(log)
    assert "models:/NoSuchModel@champion" in line and "check the model name" in line
    assert "Traceback" not in log


def test_bare_model_name_exits_naming_the_forms_that_work(tmp_path: Path) -> None:
    code, log = startup_failure(tmp_path, MODEL_API_MODEL_URI="models:/ChurnPredictor")
    assert code != 0
    [line] = error_lines(log)
    assert "models:/NAME@ALIAS" in line and "Traceback" not in log


def test_unreachable_registry_is_retried_then_exits(tmp_path: Path) -> None:
    code, log = startup_failure(
        tmp_path, tracking=f"http://127.0.0.1:{free_port()}", MODEL_API_STARTUP_RETRY_S="6"
    )
    assert code != 0
    assert "retrying" in log
    [line] = error_lines(log)
    assert "reachable" in line and "Traceback" not in log
