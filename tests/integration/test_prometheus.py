"""A real Prometheus, run with the project's prometheus.yml, scrapes a real `model-api serve`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import ROOT, Registry, free_port, running_service, service_env, stop, wait_until


def prometheus_config(target: str) -> str:
    """The project's prometheus.yml with only the scrape target rewritten."""
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "model-api"
    job["static_configs"] = [{"targets": [target]}]
    return yaml.safe_dump(config, sort_keys=False)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_reads_back_the_predictions_sent(
    registry: Registry, tmp_path: Path, example_rows: list[dict[str, Any]]
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make system-deps` installs the Debian package")
    port = free_port()
    env = service_env(registry.tracking_uri, port)
    with running_service(env, tmp_path / "server.log") as server:
        sent = 7
        for _ in range(sent):
            response = httpx.post(f"{server.url}/predict", json={"instances": example_rows}, timeout=10)
            assert response.status_code == 200
        assert httpx.post(f"{server.url}/predict", json={"instances": [{}]}, timeout=10).status_code == 422

        # The config's rule_files are relative to it: the deploy folder sits beside it, as in the repo.
        (tmp_path / "deploy").symlink_to(ROOT / "deploy")
        (tmp_path / "prometheus.yml").write_text(prometheus_config(f"127.0.0.1:{port}"))
        web = free_port()
        url = f"http://127.0.0.1:{web}"
        with (tmp_path / "prometheus.log").open("w") as log:
            prometheus = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{web}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        try:

            def scraped() -> bool:
                if prometheus.poll() is not None:
                    raise AssertionError((tmp_path / "prometheus.log").read_text())
                try:
                    # Prometheus answers 503 "Service Unavailable" until its storage is open.
                    if httpx.get(f"{url}/-/ready", timeout=5).status_code != 200:
                        return False
                    return bool(query(url, 'predictions_total{job="model-api"}'))
                except httpx.TransportError:
                    return False

            # The first scrape comes within one scrape interval (15 s) of the start.
            wait_until(scraped, 60, "Prometheus to scrape the service", interval=0.5)
            [ok] = query(url, 'sum(predictions_total{job="model-api", outcome="ok"})')
            assert float(ok["value"][1]) == sent
            [invalid] = query(url, 'sum(predictions_total{job="model-api", outcome="invalid"})')
            assert float(invalid["value"][1]) == 1
            [up] = query(url, 'up{job="model-api"}')
            assert up["metric"]["instance"] == f"127.0.0.1:{port}" and up["value"][1] == "1"

            rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            assert {g["name"] for g in rules} == {"model-api.recording", "model-api.alerts"}
            assert all(r["health"] != "err" for g in rules for r in g["rules"])
        finally:
            stop(prometheus, timeout=20)
