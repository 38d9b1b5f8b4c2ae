"""Fixtures for the image tests: the image built hermetically once, a demo registry, running containers."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.engine import (
    Podman,
    build_image,
    ensure_base_image,
    ensure_wheels,
    image_python,
)
from tests.support import ROOT, answers_ok, free_port, make_registry, wait_until

READY_TIMEOUT_S = 180.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "container":
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def podman() -> Podman:
    return Podman.find()


@pytest.fixture(scope="session")
def image(podman: Podman) -> Iterator[str]:
    """Dockerfile.api built with no network from the stand-in base and the host's wheelhouse."""
    base = ensure_base_image(podman)
    wheels = ensure_wheels(ROOT / "requirements-serve.txt", image_python(podman, base))
    tag = f"localhost/model-api:test-{os.getpid()}"
    build_image(podman, ROOT, wheels, tag)
    try:
        yield tag
    finally:
        # Untag only: the layers stay in the engine's cache for the next run.
        podman("rmi", tag, check=False)


@pytest.fixture(scope="session")
def registry_dir() -> Iterator[Path]:
    """A sqlite registry with the demo model, readable by the image's unprivileged user."""
    root = Path(tempfile.mkdtemp(prefix="model-api-registry-"))
    try:
        root.chmod(0o755)
        make_registry(root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Container:
    """A running container of the image, on the host network, serving on 127.0.0.1:`port`."""

    podman: Podman
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, object]:
        state = self.podman.inspect("container", self.name)["State"]
        assert isinstance(state, dict)
        return state

    def logs(self) -> str:
        result = self.podman("logs", self.name, check=False)
        return result.stdout + result.stderr


StartContainer = Callable[..., Container]


@pytest.fixture
def start_container(podman: Podman, image: str, registry_dir: Path) -> Iterator[StartContainer]:
    """Start containers of the image against the mounted registry; every one is removed afterwards."""
    started: list[str] = []

    def start(**env: str) -> Container:
        name = f"model-api-test-{uuid.uuid4().hex[:10]}"
        port = free_port()
        settings = {
            "MODEL_API_HOST": "127.0.0.1",  # the host network, but only on loopback
            "MODEL_API_PORT": str(port),
            "MLFLOW_TRACKING_URI": f"sqlite:///{registry_dir}/mlflow.db",
            "MODEL_API_MODEL_URI": "models:/ChurnPredictor@champion",
            **env,
        }
        started.append(name)
        podman(
            "run",
            "--detach",
            f"--name={name}",
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp:rw,nosuid,nodev,size=256m",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            *podman.ulimits,
            # The registry keeps absolute artifact paths: mount it where it lives, read-only.
            f"--volume={registry_dir}:{registry_dir}:ro",
            *(f"--env={key}={value}" for key, value in settings.items()),
            image,
        )
        container = Container(podman, name, port)
        wait_ready(container)
        return container

    try:
        yield start
    finally:
        for name in started:
            podman("rm", "--force", "--time=0", name, check=False, timeout=60)


def wait_ready(container: Container) -> None:
    def ready() -> bool:
        state = container.state()
        if not state.get("Running"):
            raise AssertionError(f"the container exited {state.get('ExitCode')}:\n{container.logs()}")
        return answers_ok(f"{container.url}/ready")

    try:
        wait_until(ready, READY_TIMEOUT_S, "the container to be ready", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{container.logs()}") from None
