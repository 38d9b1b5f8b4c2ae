"""Reloads on a real sqlite registry holding two versions whose input contracts differ.

Version 1 is the demo model; version 2 was trained without the `age` column, so a client sending
rows in signature order would break: the rollout refuses it unless told to accept the change.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_api.main import create_app
from model_api.registration import move_alias, register_sklearn_model
from model_api.rollout import Rollout
from model_api.settings import Settings
from tests.support import Registry, make_registry

DROPPED = "age"


def register_without(tracking_uri: str, artifacts: Path, column: str) -> str:
    """Register a version of the demo model trained without `column`; the alias stays put."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from model_api.demo import CATEGORICAL, MODEL_NAME, NUMERIC, make_churn_table

    frame, label = make_churn_table(400, seed=11)
    frame = frame.drop(columns=[column])
    features = ColumnTransformer(
        [
            ("numeric", StandardScaler(), [c for c in NUMERIC if c != column]),
            ("categorical", OneHotEncoder(handle_unknown="error"), [c for c in CATEGORICAL if c != column]),
        ]
    )
    model = Pipeline([("features", features), ("model", RandomForestClassifier(3, random_state=0))])
    model.fit(frame, label)
    return register_sklearn_model(
        model,
        tracking_uri=tracking_uri,
        name=MODEL_NAME,
        alias=None,
        experiment="churn-demo",
        artifact_dir=artifacts,
        input_example=frame.head(3),
        params={"dropped": column},
        metrics={},
    ).version


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, str]:
    registry = make_registry(tmp_path_factory.mktemp("rollout"), n_trees=5)
    v2 = register_without(registry.tracking_uri, registry.root / "artifacts", DROPPED)
    return registry, v2


def serving(two_versions: tuple[Registry, str], **overrides: Any) -> Iterator[TestClient]:
    registry, _ = two_versions
    move_alias(registry.tracking_uri, "ChurnPredictor", "champion", "1")  # each test starts on v1
    settings = Settings(
        model_uri="models:/ChurnPredictor@champion",
        tracking_uri=registry.tracking_uri,
        reload_interval_s=0,
        **overrides,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(two_versions: tuple[Registry, str]) -> Iterator[TestClient]:
    yield from serving(two_versions)


@pytest.fixture
def accepting(two_versions: tuple[Registry, str]) -> Iterator[TestClient]:
    yield from serving(two_versions, reload_accept_schema_change=True)


def predict_example(client: TestClient) -> dict[str, Any]:
    info = client.get("/model/info").json()
    response = client.post("/predict", json={"instances": info["input_example"]})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_contract_change_is_refused_and_the_old_version_keeps_serving(
    client: TestClient, two_versions: tuple[Registry, str]
) -> None:
    registry, v2 = two_versions
    move_alias(registry.tracking_uri, "ChurnPredictor", "champion", v2)
    answer = client.post("/admin/reload").json()
    assert (answer["action"], answer["from_version"], answer["to_version"]) == ("refused", "1", v2)
    assert "changes the input contract" in answer["message"] and "columns changed" in answer["message"]
    assert "MODEL_API_RELOAD_ACCEPT_SCHEMA_CHANGE" in answer["message"]
    info = client.get("/model/info").json()
    assert info["version"] == "1" and DROPPED in [c["name"] for c in info["inputs"]]
    assert info["rollout"]["last_outcome"] == "refused" and info["rollout"]["failed_version"] == v2
    assert info["rollout"]["schema_changes"] == []
    assert predict_example(client)["model_version"] == "1"
    assert 'model_reloads_total{outcome="refused"} 1.0' in client.get("/metrics").text


def test_the_rollout_itself_refuses_without_a_route(
    client: TestClient, two_versions: tuple[Registry, str]
) -> None:
    registry, v2 = two_versions
    rollout: Rollout = client.app.state.rollout  # type: ignore[attr-defined]
    assert client.portal is not None
    assert client.portal.call(rollout.reload).action == "unchanged"
    move_alias(registry.tracking_uri, "ChurnPredictor", "champion", v2)
    refused = client.portal.call(rollout.reload)
    assert (refused.action, refused.from_version, refused.to_version) == ("refused", "1", v2)
    again = client.portal.call(rollout.reload)
    assert again.action == "unchanged" and "failed before" in again.message, "not retried every poll"
    assert client.get("/model/info").json()["version"] == "1"


def test_a_contract_change_is_served_when_accepted(
    accepting: TestClient, two_versions: tuple[Registry, str]
) -> None:
    registry, v2 = two_versions
    move_alias(registry.tracking_uri, "ChurnPredictor", "champion", v2)
    answer = accepting.post("/admin/reload").json()
    assert (answer["action"], answer["from_version"], answer["to_version"]) == ("reloaded", "1", v2)
    info = accepting.get("/model/info").json()
    assert info["version"] == v2 and DROPPED not in [c["name"] for c in info["inputs"]]
    [change] = info["rollout"]["schema_changes"]
    assert "columns changed" in change and DROPPED in change
    assert info["rollout"]["accept_schema_change"] is True
    assert predict_example(accepting)["model_version"] == v2
    assert (
        DROPPED not in accepting.get("/openapi.json").json()["components"]["schemas"]["Instance"]["required"]
    )


def test_a_retired_version_is_freed(client: TestClient) -> None:
    """Once swapped out and drained, a version is held by nothing, so its memory comes back: the
    app's startup once kept the first version it served for the life of the process."""
    first = weakref.ref(client.app.state.dataplane.predictor)  # type: ignore[attr-defined]
    assert client.post("/admin/reload", params={"force": "true"}).json()["action"] == "reloaded"
    deadline = time.monotonic() + 60  # the old version drains and closes in the background
    while first() is not None and time.monotonic() < deadline:
        assert client.get("/health").status_code == 200
        gc.collect()
        time.sleep(0.05)
    assert first() is None, "the first version is still referenced after it was retired"
    assert predict_example(client)["model_version"] == "1"


def test_force_reloads_the_version_already_served(client: TestClient) -> None:
    before = client.get("/model/info").json()
    assert client.post("/admin/reload").json()["action"] == "unchanged"
    answer = client.post("/admin/reload", params={"force": "true"}).json()
    assert (answer["action"], answer["from_version"], answer["to_version"]) == ("reloaded", "1", "1")
    after = client.get("/model/info").json()
    assert after["version"] == "1" and after["loaded_at"] != before["loaded_at"], "loaded again"
    assert predict_example(client)["model_version"] == "1"
