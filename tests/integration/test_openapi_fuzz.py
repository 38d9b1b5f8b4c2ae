"""schemathesis against the served /openapi.json: every operation, a fixed seed, bounded examples.

Every check schemathesis has runs (no 5xx, documented statuses, content types, headers and response
schemas, schema-violating requests refused, schema-valid requests accepted, and requests without the
API key refused); a real server in a thread answers, with API keys on so the 401s are exercised too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from model_api.main import create_app
from model_api.settings import Settings
from tests.support import Registry, server_in_thread

KEY = "fuzzing-key-0123456789"
# 413 is how this service refuses too many rows or too large a body: a refusal like 400 and 422.
# The KServe and MLflow protocol bodies are documented by their protocol's shape (tensors,
# instances, MLflow's four forms), not by the model's signature, so a body valid for the schema need
# not be one the model can use: the check that schema-valid bodies are accepted is off for those
# three operations only.
# Every check is on by default (not passed on the command line, which would override the operation's).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "415", "422"]

[[operations]]
include-path-regex = "^/v1/models/[^/]+:predict$|/infer$|^/invocations$"
checks.positive_data_acceptance.enabled = false
"""


@pytest.fixture(scope="module")
def served(registry: Registry) -> Iterator[str]:
    settings = Settings(tracking_uri=registry.tracking_uri, api_keys=SecretStr(KEY), request_timeout_s=20)
    with server_in_thread(create_app(settings)) as url:
        yield url


def schemathesis(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--phases",
            "examples,coverage,fuzzing",
            "--generation-deterministic",  # a fixed sequence of cases: the same run every time
            "--max-examples",
            "100",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
    )


def test_every_operation_survives_schemathesis(served: str, tmp_path: Path) -> None:
    result = schemathesis(served, tmp_path)
    out = result.stdout
    assert result.returncode == 0, f"{out[:8000]}\n...\n{out[-3000:]}\n{result.stderr[-2000:]}"
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    tested = re.search(r"Tested: (\d+)", out)
    generated = re.search(r"(\d+) generated", out)
    assert selected and tested and generated, out[-3000:]
    assert selected[1] == selected[2] == tested[1], "every operation is tested"
    assert int(tested[1]) >= 5, "/health, /ready, /predict, /model/info and /metrics at least"
    assert int(generated[1]) >= 100, "enough cases to mean something"
