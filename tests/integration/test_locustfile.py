"""The locustfile drives a real server headless: payloads come from /model/info, nothing fails."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path
from typing import Any

from model_api.main import create_app
from model_api.settings import Settings
from tests.support import locust_command, server_in_thread


def test_locust_runs_every_task_without_failures(registry: Any, tmp_path: Path) -> None:
    app = create_app(Settings(tracking_uri=registry.tracking_uri))
    with server_in_thread(app) as url:
        result = subprocess.run(
            [
                *locust_command(
                    url, users=20, spawn_rate=20, run_time_s=6, csv_prefix=tmp_path / "run", stop_timeout_s=5
                ),
                "--exit-code-on-error",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "run_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows.pop("Aggregated")
    assert int(total["Request Count"]) > 20 and int(total["Failure Count"]) == 0
    names = set(rows)
    assert {"/predict [1 row]", "/health", "/ready"} <= names, names
