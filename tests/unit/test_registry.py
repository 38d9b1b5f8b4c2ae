"""The registry: resolve once and load by alias, version, latest, stage, run or folder; failures that
say what to check; retries within the budget."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from model_api.errors import ModelLoadError
from model_api.registry import load_model, mlflow_uris
from tests.support import Registry, free_port


def test_loads_by_alias_with_registry_metadata(registry: Registry) -> None:
    loaded = registry.load("models:/ChurnPredictor@champion")
    assert loaded.name == "ChurnPredictor"
    assert loaded.version == registry.demo.version
    assert loaded.run_id == registry.demo.run_id
    assert loaded.flavor == "sklearn"
    assert loaded.estimator_class.endswith("(sklearn.ensemble._forest.RandomForestClassifier)")
    assert loaded.input_example is not None and len(loaded.input_example.columns) == 10
    assert loaded.signature.inputs.input_names()[0] == "tenure_months"


@pytest.mark.parametrize(
    "form", ["models:/ChurnPredictor/{version}", "models:/ChurnPredictor/latest", "runs:/{run_id}/model"]
)
def test_loads_by_version_latest_and_run(registry: Registry, form: str) -> None:
    uri = form.format(version=registry.demo.version, run_id=registry.demo.run_id)
    loaded = registry.load(uri)
    assert hasattr(loaded.model, "predict_proba")
    if not uri.startswith("runs:/"):
        assert loaded.version == registry.demo.version


def test_loads_a_stage_and_warns_that_stages_are_deprecated(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    client = mlflow.MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    with pytest.warns(FutureWarning):
        client.transition_model_version_stage("ChurnPredictor", registry.demo.version, "Staging")
    loaded = registry.load("models:/ChurnPredictor/Staging")
    assert loaded.version == registry.demo.version
    assert "deprecated" in caplog.text


def test_loads_a_local_model_folder(registry: Registry, tmp_path: Path) -> None:
    with mlflow_uris(registry.tracking_uri):
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/ChurnPredictor/{registry.demo.version}", dst_path=str(tmp_path)
        )
    loaded = load_model(folder, registry.tracking_uri)
    assert loaded.version is None and loaded.flavor == "sklearn"
    assert Path(folder, "MLmodel").is_file(), "a local folder is never deleted"


def test_missing_model_fails_at_once_with_what_to_check(registry: Registry) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("models:/NoSuchModel@champion", registry.tracking_uri, retry_budget_s=30)
    message = str(err.value)
    assert "models:/NoSuchModel@champion" in message
    assert "1 attempt" in message
    assert "check the model name" in message


def test_missing_local_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no MLmodel file"):
        load_model(str(tmp_path / "nothing"), "sqlite:///unused.db")


def test_unreachable_registry_is_retried_within_the_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelLoadError) as err:
        load_model("models:/ChurnPredictor@champion", url, retry_budget_s=1.5)
    message = str(err.value)
    assert err.value.__cause__ is not None
    assert "after 1 attempt(" not in message, "a refused connection is retried"
    assert url in message and "reachable" in message


def test_loading_leaves_the_process_environment_alone(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    registry.load(f"runs:/{registry.demo.run_id}/model")
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
