"""The compiled fast path through the served routes: a model of each tree family trained here,
served by create_app, answers bit-equal to its own predict/predict_proba on rows built from its
split thresholds (on each, one float32 step either side) and rows holding NaN; models the compiler
cannot take, and MODEL_API_FAST_PATH=off, are served by the model with the same answers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import xgboost
from fastapi.testclient import TestClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from model_api.fastpath import FastPath, verify
from model_api.main import create_app
from model_api.settings import Settings
from tests.support import metric_value
from tests.unit.fastpath_support import CATEGORICAL, NUMERIC, SPECS, converter, table

N_ROWS = 200_000  # rows sent through /predict per family (issue 13: at least 200k), CHUNK a request
CHUNK = 20_000
SINGLE_ROWS = 300  # of them, sent again one per request
OPTIONAL = ("income", "ratio")  # optional columns: a JSON null reaches the model as NaN


def _pipeline(final: Any, impute: bool = False) -> Pipeline:
    numbers: Any = StandardScaler()
    if impute:  # for trees that refuse NaN
        numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    features = ColumnTransformer(
        [("numbers", numbers, NUMERIC), ("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)]
    )
    return Pipeline([("features", features), ("model", final)])


def _signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(s.kind, s.name, required=s.name not in OPTIONAL) for s in SPECS])  # type: ignore[arg-type]
    )


def _save(model: Any, root: Path) -> str:
    import mlflow.sklearn

    path = root / "model"
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=_signature(),
        pip_requirements=["scikit-learn"],
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
    )
    return str(path)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def start(model: Any, **settings: Any) -> TestClient:
        uri = _save(model, tmp_path / str(len(clients)))
        tracking = f"sqlite:///{tmp_path}/mlflow.db"
        options = {"fast_path_check_rows": 20_000, "max_rows": CHUNK, "max_body_bytes": 2**24, **settings}
        client = TestClient(create_app(Settings(model_uri=uri, tracking_uri=tracking, **options)))
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            client.__exit__(None, None, None)


def _fast(client: TestClient) -> FastPath | None:
    fast: FastPath | None = client.app.state.dataplane.served().fast  # type: ignore[attr-defined]
    return fast


def edge_rows(fast: FastPath, n: int, seed: int) -> dict[str, np.ndarray]:
    """Rows as the load's check builds them (`fastpath.verify`), from a different seed: each split
    threshold of the compiled trees mapped back to request values, one step either side, NaN in
    the optional columns, known categories, random values around the thresholds."""
    prep, evaluator = fast._prep, fast._evaluator
    categories = {o.column: o.categories for o in prep.origins if o is not None and o.categories}
    columns = [
        verify.Column(s.name, s.kind, s.name in OPTIONAL, False, categories.get(j, ()))
        for j, s in enumerate(SPECS)
    ]
    edges = verify.threshold_values(evaluator.thresholds, prep.origins, columns, evaluator.float32)
    rng = np.random.default_rng(seed)
    rows = verify.random_rows(columns, edges, n, rng)
    budget = int(0.75 * n)
    picked = {j: rng.permutation(v)[: max(1, budget // max(1, len(edges)))] for j, v in edges.items()}
    verify.place_edges(rows, columns, picked)
    return rows


def _jsonable(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _answers(
    client: TestClient, rows: dict[str, np.ndarray], probabilities: bool, chunk: int = CHUNK
) -> tuple[list[Any], Any]:
    names = list(rows)
    labels: list[Any] = []
    proba: list[list[float]] = []
    n = len(rows[names[0]])
    for start in range(0, n, chunk):
        records = [{c: _jsonable(rows[c][i]) for c in names} for i in range(start, min(n, start + chunk))]
        response = client.post("/predict", json={"instances": records, "return_probabilities": probabilities})
        assert response.status_code == 200, response.text
        body = response.json()
        labels += body["predictions"]
        if probabilities:
            proba += [list(p.values()) for p in body["probabilities"]]
    return labels, np.asarray(proba, dtype=np.float64) if probabilities else None


def _expected(model: Any, rows: dict[str, np.ndarray], probabilities: bool) -> tuple[list[Any], Any]:
    columns = {c: [math.nan if v is None else v for v in map(_jsonable, rows[c])] for c in rows}
    frame = converter(SPECS)(columns)
    proba = np.asarray(model.predict_proba(frame), dtype=np.float64) if probabilities else None
    return model.predict(frame).tolist(), proba


def _assert_same(got: tuple[list[Any], Any], expected: tuple[list[Any], Any]) -> None:
    assert got[0] == expected[0]
    if expected[1] is not None:
        assert got[1].shape == expected[1].shape
        assert (got[1].view(np.uint64) == expected[1].view(np.uint64)).all(), "every probability bit"


FAMILIES = {
    "random-forest": lambda: _pipeline(RandomForestClassifier(n_estimators=25, random_state=0)),
    "extra-trees": lambda: _pipeline(ExtraTreesClassifier(n_estimators=25, random_state=0), impute=True),
    "gradient-boosting": lambda: _pipeline(
        GradientBoostingClassifier(n_estimators=20, random_state=0), impute=True
    ),
    "hist-gradient-boosting": lambda: _pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0)),
    "xgboost": lambda: _pipeline(xgboost.XGBClassifier(n_estimators=20, max_depth=4, random_state=0)),
    "lightgbm": lambda: _pipeline(
        lightgbm.LGBMClassifier(n_estimators=20, num_leaves=15, random_state=0, verbose=-1)
    ),
    "forest-regressor": lambda: _pipeline(RandomForestRegressor(n_estimators=15, random_state=0)),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_served_by_the_fast_path_with_the_models_bits(serve: Any, family: str) -> None:
    frame, label, score = table(800, seed=3, nan=True)
    model = FAMILIES[family]()
    regressor = family.endswith("regressor")
    model.fit(frame, score if regressor else label)
    client = serve(model)

    info = client.get("/model/info").json()
    assert info["fast_path"] is not None, info["fast_path_reason"]
    assert "identical to the model on 20000 rows" in info["fast_path_reason"]
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "model_fast_path", model_name=info["name"], model_version="") == 1

    fast = _fast(client)
    assert fast is not None
    rows = edge_rows(fast, N_ROWS, seed=7)
    assert verify.has_nan(rows).sum() > 100
    _assert_same(_answers(client, rows, not regressor), _expected(model, rows, not regressor))
    # single rows too: a faster evaluator may answer small batches (fastpath/build.py)
    few = {c: v[:SINGLE_ROWS] for c, v in rows.items()}
    _assert_same(_answers(client, few, not regressor, chunk=1), _expected(model, few, not regressor))
    assert fast.fallbacks == 0, "every row was answered by the fast path"


def test_a_value_the_model_refuses_gets_the_models_error(serve: Any) -> None:
    """A float32 overflow after scaling: the fast path hands the row to the model, which raises."""
    frame, label, _ = table(600, seed=4)
    model = _pipeline(RandomForestClassifier(n_estimators=10, random_state=0)).fit(frame, label)
    row = {c: _jsonable(frame[c].iloc[0]) for c in frame.columns} | {"ratio": 3.0e38}
    fast_client = serve(model)
    slow_client = serve(model, fast_path="off")
    fast = _fast(fast_client)
    assert fast is not None
    answers = [c.post("/predict", json={"instances": [row]}) for c in (fast_client, slow_client)]
    assert [a.status_code for a in answers] == [500, 500]
    assert answers[0].json()["error"]["code"] == answers[1].json()["error"]["code"]
    assert fast.fallbacks >= 1


UNCOMPILABLE = {
    "linear": (lambda: _pipeline(LogisticRegression(max_iter=1000), impute=True), "LogisticRegression"),
    "custom-step": (
        lambda: Pipeline(
            [
                (
                    "features",
                    ColumnTransformer(
                        [
                            ("log", FunctionTransformer(np.log1p), ["income"]),
                            ("rest", "passthrough", ["visits"]),
                        ]
                    ),
                ),
                ("model", RandomForestClassifier(n_estimators=10, random_state=0)),
            ]
        ),
        "cannot compile",
    ),
}


@pytest.mark.parametrize("name", list(UNCOMPILABLE))
def test_a_model_the_compiler_cannot_take_is_served_by_the_model(serve: Any, name: str) -> None:
    make, reason = UNCOMPILABLE[name]
    frame, label, _ = table(600, seed=5, nan=True)
    model = make().fit(frame, label)
    client = serve(model)
    info = client.get("/model/info").json()
    assert info["fast_path"] is None
    assert reason in info["fast_path_reason"]
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "model_fast_path", model_name=info["name"], model_version="") == 0
    rows = {c: frame[c].to_numpy() for c in frame.columns}
    _assert_same(_answers(client, rows, True), _expected(model, rows, True))


def test_fast_path_off_serves_the_model(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    frame, label, _ = table(600, seed=6, nan=True)
    model = _pipeline(RandomForestClassifier(n_estimators=10, random_state=0)).fit(frame, label)
    monkeypatch.setenv("MODEL_API_FAST_PATH", "off")
    assert Settings().fast_path == "off"
    client = serve(model, fast_path=Settings().fast_path)
    info = client.get("/model/info").json()
    assert info["fast_path"] is None
    assert "MODEL_API_FAST_PATH=off" in info["fast_path_reason"]
    assert (
        metric_value(
            client.get("/metrics").text, "model_fast_path", model_name=info["name"], model_version=""
        )
        == 0
    )
    rows = {c: frame[c].to_numpy() for c in frame.columns}
    _assert_same(_answers(client, rows, True), _expected(model, rows, True))
