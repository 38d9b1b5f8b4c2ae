"""Shared fixtures: one real sqlite MLflow registry with the demo model for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.support import Registry, make_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def champion(registry: Registry) -> LoadedModel:
    return registry.load()


@pytest.fixture
def settings(registry: Registry) -> Settings:
    return Settings(model_uri="models:/ChurnPredictor@champion", tracking_uri=registry.tracking_uri)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def example_rows(champion: LoadedModel) -> list[dict[str, object]]:
    assert champion.input_example is not None
    return [dict(r) for r in champion.input_example.to_dict(orient="records")]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "integration":
            item.add_marker(pytest.mark.integration)
