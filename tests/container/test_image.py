"""Dockerfile.api built for real and run read-only, unprivileged, on the host network's loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter

import httpx
import pytest

from tests.container.conftest import Container, StartContainer
from tests.container.engine import Podman
from tests.support import wait_until

# A cold run builds the stand-in base image and the image itself while setting up the first test.
pytestmark = pytest.mark.timeout(900)

# 432 MB before numba and llvmlite (the compiled tree walks, 208 MB with LLVM), 645 MB with them.
VENV_LIMIT_MB = 700
# Longer than the server's own 30 s drain, so a kill at the deadline would show as exit 137.
STOP_GRACE_S = 35


def test_image_is_unprivileged_lean_and_has_no_build_tools(podman: Podman, image: str) -> None:
    inspected = podman.inspect("image", image)
    config = inspected["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["model-api"]  # exec form: the server is PID 1 and gets SIGTERM
    assert config["Cmd"] == ["serve"]
    # Podman reports a docker-format image's HEALTHCHECK beside its config; an OCI image has none.
    assert inspected["Healthcheck"]["Test"] == ["CMD", "model-api", "healthcheck"]  # type: ignore[index]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert env["MODEL_API_HOST"] == "0.0.0.0"

    probe = podman(
        "run", "--rm", "--network=none", "--read-only", *podman.ulimits, "--entrypoint=sh", image, "-c",
        "id -u; du -sm /opt/venv | cut -f1; for t in curl wget gcc cc pip; do command -v $t; done; true",
    ).stdout.split()  # fmt: skip
    uid, venv_mb, *found = probe
    assert uid == "10001"
    assert int(venv_mb) < VENV_LIMIT_MB, f"the runtime venv is {venv_mb} MB"
    assert found == [], f"the runtime image carries {found}"


def test_container_serves_probes_predictions_and_metrics(start_container: StartContainer) -> None:
    # The port is a random free one, not 8000: the HEALTHCHECK must follow MODEL_API_PORT.
    container = start_container()
    with httpx.Client(base_url=container.url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["model_name"] == "ChurnPredictor"

        rows = client.get("/model/info").json()["input_example"]
        predicted = client.post("/predict", json={"instances": rows, "return_probabilities": True})
        assert predicted.status_code == 200, predicted.text
        assert len(predicted.json()["predictions"]) == len(rows)
        assert len(predicted.json()["probabilities"]) == len(rows)

        bad = client.post("/predict", json={"instances": [{**rows[0], "contract": "weekly"}]})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_input"

        metrics = client.get("/metrics").text
        assert 'outcome="ok"' in metrics
        assert "prediction_rows_total" in metrics

    health = container.podman("healthcheck", "run", container.name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    assert container.state()["Health"]["Status"] == "healthy"  # type: ignore[index]
    assert "Traceback" not in container.logs()


def test_sigterm_drains_accepted_requests_and_exits_zero(start_container: StartContainer) -> None:
    container = start_container()
    rows = httpx.get(f"{container.url}/model/info", timeout=10).json()["input_example"]
    body = json.dumps({"instances": rows}).encode()
    burst = Burst(container, body)
    burst.start()
    stopper: threading.Thread | None = None
    held: list[socket.socket] = []
    try:
        wait_until(lambda: burst.outcomes["ok"] >= 20, 60, "the burst to get going")
        # Requests the server has surely accepted: it asked for their bodies (100 Continue).
        held = [hold_request(container.port, len(body)) for _ in range(3)]

        stop_result: dict[str, int] = {}

        def stop() -> None:
            result = container.podman("stop", f"--time={STOP_GRACE_S}", container.name, timeout=90)
            stop_result["code"] = result.returncode

        stopper = threading.Thread(target=stop)
        stopper.start()
        try:
            wait_until(lambda: refuses(container.port), 30, "the server to stop accepting connections")
        except AssertionError as exc:  # say whether podman stop returned and what the server logged
            stopped = stop_result or "still running"
            logs = container.logs().splitlines()[-15:]
            raise AssertionError(f"{exc}; podman stop: {stopped}; last logs: {logs}") from exc

        answers = [finish_request(sock, body) for sock in held]
    finally:
        burst.stop()
        if stopper is not None:
            stopper.join(timeout=90)
        for sock in held:
            sock.close()

    for status, payload in answers:
        assert status == 200, payload
        assert len(json.loads(payload)["predictions"]) == len(rows)
    assert burst.outcomes["ok"] >= 20
    assert not burst.failures, burst.failures[:5]
    assert stop_result == {"code": 0}
    state = container.state()
    assert state["Running"] is False
    assert state["ExitCode"] == 0, container.logs()  # not 137: it drained within the grace period
    logs = container.logs()
    assert "Shutting down" in logs
    assert "Traceback" not in logs


class Burst:
    """Threads posting predictions on fresh connections until told to stop or the server is gone."""

    def __init__(self, container: Container, body: bytes, threads: int = 4) -> None:
        self.url = f"{container.url}/predict"
        self.body = body
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def record(self, outcome: str, failure: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            if failure:
                self.failures.append(failure)

    def run(self) -> None:
        headers = {"Content-Type": "application/json", "Connection": "close"}
        with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.done.is_set():
                try:
                    response = client.post(self.url, content=self.body, headers=headers)
                except httpx.ConnectError:
                    self.record("refused")  # never accepted: the listener is closed
                    return
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                    # Queued in the kernel's backlog but never accepted before the server closed its
                    # listener: reset with no answer at all. A response cut short is a failure.
                    protocol = isinstance(exc, httpx.RemoteProtocolError)
                    cut_short = protocol and "without sending" not in str(exc)
                    self.record("unanswered", f"broken response: {exc!r}" if cut_short else None)
                    continue
                except httpx.HTTPError as exc:
                    self.record("failed", f"{exc!r}")
                    continue
                if response.status_code == 200 and "predictions" in response.json():
                    self.record("ok")
                else:
                    self.record("bad", f"{response.status_code}: {response.text[:200]}")


def hold_request(port: int, length: int) -> socket.socket:
    """Send a /predict request's head only, and wait until the server asks for the body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode())
    interim = read_until(sock, b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return sock


def finish_request(sock: socket.socket, body: bytes) -> tuple[int, str]:
    """Send the body and read the whole response (the server closes: Connection: close)."""
    sock.sendall(body)
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, payload.decode(errors="replace")


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False
