"""Side by side: a real `mlflow models serve` answers every body form as the in-process reference.

One server per model (`--env-manager local`, 127.0.0.1, a free port, its own process group,
stopped in `finally`), for a subset of the zoo of different kinds. Statuses must be equal; a 200
must carry the same JSON (exact floats); an error the same `error_code` (the server's message
also quotes the data, the reference's does not). Where the real server and MLflow in process
differ, the difference is listed in KNOWN_MLFLOW_DIFFERENCES (none found with MLflow 3.17.2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conformance.reference import (
    KNOWN_MLFLOW_DIFFERENCES,
    Answer,
    Body,
    build_body,
    json_diff,
    load_reference_model,
    pick,
    reference_answer,
    size,
)
from tests.conformance.zoo import Entry, Zoo
from tests.support import answers_ok, free_port, wait_until

pytestmark = pytest.mark.integration

# Different kinds: a ColumnTransformer pipeline with null quirks, one without a signature,
# LightGBM on a category, every column type, a 3-D tensor, DataFrame and NaN outputs, params,
# type hints, a model from code, a model that raises (11 servers, ~8 s each on an idle machine).
SERVED = [
    "sk-optional-string",
    "sk-pipeline-nosig",
    "lgbm-category",
    "py-every-type",
    "py-tensor-3d",
    "py-frame-output",
    "py-nan-output",
    "py-params",
    "py-pydantic-hint",
    "py-from-code",
    "py-raising",
]


def _env(tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_API_", "MLFLOW_"))}
    # The CLI execs `uvicorn` by name: the venv's bin folder must be on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri}


@contextmanager
def mlflow_models_serve(entry: Entry, root: Path, timeout: float = 120.0) -> Iterator[str]:
    """`mlflow models serve -m URI --env-manager local` on a free loopback port; yields its URL."""
    port = free_port()
    log_path = root / f"serve-{entry.name}.log"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", entry.uri]
    command += ["--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"]
    with log_path.open("w") as log:
        # Its own session: the CLI runs uvicorn as a child, and the whole group is stopped below.
        process = subprocess.Popen(
            command,
            env=_env(entry.tracking_uri),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, f"mlflow models serve exited:\n{log_path.read_text()[-3000:]}"
        return answers_ok(f"{url}/ping")

    try:
        wait_until(up, timeout, f"mlflow models serve {entry.uri}", interval=0.25)
        yield url
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # the uvicorn child, should it outlive the CLI
        os.killpg(process.pid, signal.SIGKILL)


def post(client: httpx.Client, url: str, body: Body) -> Answer:
    response = client.post(
        f"{url}/invocations", content=body.content, headers={"content-type": body.content_type}
    )
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return Answer(response.status_code, parsed)


def compare(served: Answer, expected: Answer) -> str | None:
    """How the server's answer differs from the reference, or None."""
    if served.status != expected.status:
        return f"status {served.status} != {expected.status}: {str(served.body)[:300]}"
    if expected.status == 200:
        return json_diff(served.body, expected.body)
    if not isinstance(served.body, dict) or served.body.get("error_code") != expected.body["error_code"]:
        return f"error {served.body} != {expected.body['error_code']}"
    return None


def bodies(entry: Entry) -> list[tuple[str, Body]]:
    """Every form of the entry's request; each row alone (split and records); bad rows; params."""
    out = [(form, build_body(entry, form)) for form in entry.forms]
    first = entry.forms[0]
    for i in range(size(entry)):
        out.append((f"{first} row {i}", build_body(pick(entry, [i]), first)))
    if entry.bad_rows:
        out += [(f"{form} bad", build_body(entry, form, bad=True)) for form in entry.forms]
    if entry.params:
        out.append((f"{first} default params", build_body(entry, first, params={})))
        out.append((f"{first} unknown param", build_body(entry, first, params={"nope": 1})))
        out.append((f"{first} ill-typed param", build_body(entry, first, params={"k": "three"})))
    return out


@pytest.mark.parametrize("name", SERVED)
def test_mlflow_models_serve_answers_as_the_reference(zoo: Zoo, name: str, tmp_path: Path) -> None:
    import mlflow

    entry = zoo.entries[name]
    model = load_reference_model(entry)
    differences = []
    with mlflow_models_serve(entry, tmp_path) as url, httpx.Client(timeout=httpx.Timeout(30.0)) as client:
        assert client.get(f"{url}/version").text == mlflow.__version__
        for label, body in bodies(entry):
            served = post(client, url, body)
            if diff := compare(served, reference_answer(model, body)):
                differences.append((label, diff))
    unlisted = [
        (label, diff)
        for label, diff in differences
        if (name, f"serve {label}") not in KNOWN_MLFLOW_DIFFERENCES
    ]
    assert unlisted == [], f"{name}: mlflow models serve answers otherwise than MLflow in process"
    listed = {label for (n, label) in KNOWN_MLFLOW_DIFFERENCES if n == name and label.startswith("serve ")}
    assert listed <= {f"serve {label}" for label, _ in differences}, "a listed serve difference is gone"
