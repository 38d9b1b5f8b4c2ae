"""Faults against a real `model-api serve`: a worker SIGKILLed under several workers is replaced, and the
service keeps answering (the registry down at startup is in test_server_process.py; a model that
raises or hangs in tests/api)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil

from model_api.registry import LoadedModel
from tests.integration.test_workers import per_worker_counts
from tests.support import Registry, free_port, running_service, service_env, start_service, stop, wait_until


def workers(supervisor: int) -> set[int]:
    """The uvicorn worker processes of a supervisor (not multiprocessing's resource tracker)."""
    found = set()
    for child in psutil.Process(supervisor).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any("spawn_main" in a for a in child.cmdline()):
                found.add(child.pid)
        except psutil.Error:  # gone, or a zombie not yet reaped: not a worker
            continue
    return found


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(
    registry: Registry, champion: LoadedModel, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = service_env(
        registry.tracking_uri, free_port(), MODEL_API_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    )
    with running_service(env, tmp_path / "server.log") as server:
        row = httpx.get(f"{server.url}/model/info", timeout=10).json()["input_example"][0]
        expected = champion.model.predict(pd.DataFrame([row])).tolist()
        wait_until(lambda: len(workers(server.process.pid)) == 2, 60, "two workers")
        before = workers(server.process.pid)

        outcomes: list[Any] = []
        stop = threading.Event()

        def client() -> None:
            # One request at a time, each on a fresh connection: at most one is in flight at the kill.
            while not stop.is_set():
                try:
                    response = httpx.post(f"{server.url}/predict", json={"instances": [row]}, timeout=10)
                    ok = response.status_code == 200 and response.json()["predictions"] == expected
                    outcomes.append(ok or response.status_code)
                except httpx.TransportError as exc:
                    outcomes.append(type(exc).__name__)

        thread = threading.Thread(target=client)
        thread.start()
        try:
            wait_until(lambda: len(outcomes) >= 20, 30, "requests before the kill")
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            at_kill = len(outcomes)

            def newcomers() -> set[int]:
                current = workers(server.process.pid)  # one look: the set changes between calls
                return current - before if len(current) == 2 and victim not in current else set()

            wait_until(lambda: bool(newcomers()), 60, "the killed worker to be replaced")
            replaced = len(outcomes)
            [newcomer] = newcomers()
            scratch = tmp_path / "scratch"
            scratch.mkdir()
            wait_until(
                lambda: per_worker_counts(metrics_dir, scratch).get(newcomer, 0) > 0,
                90,
                "the new worker to load the model and answer",
                interval=0.5,
            )
            served = len(outcomes)
            wait_until(lambda: len(outcomes) >= served + 20, 60, "requests after the replacement")
        finally:
            stop.set()
            thread.join(30)

        after = workers(server.process.pid)
        assert victim not in after and len(after - before) == 1, (before, after)
        failures = [o for o in outcomes if o is not True]
        assert len(failures) <= 1, f"only a request in flight at the kill may fail: {failures}"
        assert all(o is True for o in outcomes[: at_kill - 1]), "all answered before the kill"
        assert all(o is True for o in outcomes[replaced:]), "all answered after the replacement"


def test_keys_from_a_mounted_file_guard_a_real_server_and_stay_out_of_its_log(
    registry: Registry, tmp_path: Path
) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("# the Secret's data, mounted\nkey-from-the-secret-4f1c\n")
    env = service_env(registry.tracking_uri, free_port(), MODEL_API_API_KEYS_FILE=str(secret))
    with running_service(env, tmp_path / "server.log") as server:
        row = httpx.get(f"{server.url}/model/info", headers={"X-API-Key": "key-from-the-secret-4f1c"}).json()[
            "input_example"
        ][0]
        denied = httpx.post(f"{server.url}/predict", json={"instances": [row]}, timeout=10)
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
        allowed = httpx.post(
            f"{server.url}/predict",
            json={"instances": [row]},
            headers={"Authorization": "Bearer key-from-the-secret-4f1c"},
            timeout=10,
        )
        assert allowed.status_code == 200
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 200
    log = server.log()
    assert '"status": 401' in log or '"status":401' in log, "the refusal is in the access log"
    assert "key-from-the-secret-4f1c" not in log


def test_an_unreadable_keys_file_ends_startup_with_one_clear_line(registry: Registry, tmp_path: Path) -> None:
    env = service_env(registry.tracking_uri, free_port(), MODEL_API_API_KEYS_FILE=str(tmp_path / "missing"))
    server = start_service(env, tmp_path / "server.log")
    try:
        code = server.process.wait(timeout=60)
    finally:
        stop(server.process)
    assert code != 0
    log = server.log()
    assert "MODEL_API_API_KEYS_FILE" in log and "No such file" in log and "Traceback" not in log
