"""Writing to the registry: register a fitted model with its signature, read and move an alias.

What `make demo`, the tests and an operator's rollout do; the serving path only reads
(`registry.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from model_api.registry import PERMANENT_CODES, RegisteredVersion, _client, mlflow_uris


def find_alias(tracking_uri: str, name: str, alias: str) -> RegisteredVersion | None:
    """The version `name@alias` points at, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        mv = _client(tracking_uri, None).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in PERMANENT_CODES:
            return None
        raise
    return RegisteredVersion(str(mv.version), mv.run_id or "")


def register_sklearn_model(
    model: Any,
    *,
    tracking_uri: str,
    name: str,
    alias: str | None,
    experiment: str,
    artifact_dir: Path,
    input_example: pd.DataFrame,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
) -> RegisteredVersion:
    """Log a fitted scikit-learn model with its signature and example, register it, set the alias
    (when one is given).

    A local registry keeps artifacts in `artifact_dir`; an HTTP registry decides for itself.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    client = _client(tracking_uri, None)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    elif tracking_uri.startswith(("http://", "https://")):
        experiment_id = client.create_experiment(experiment)
    else:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(
            experiment, artifact_location=artifact_dir.resolve().as_uri()
        )
    signature = infer_signature(input_example, model.predict(input_example))
    with mlflow_uris(tracking_uri), mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(dict(params))
        mlflow.log_metrics(dict(metrics))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            registered_model_name=name,
            # MLflow >= 3.14 saves with skops, which refuses a forest's trees unless trusted.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    version = str(info.registered_model_version)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)
    return RegisteredVersion(version, run.info.run_id)


def move_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """Point `name@alias` at `version`: how a model is rolled out or rolled back."""
    _client(tracking_uri, None).set_registered_model_alias(name, alias, version)
