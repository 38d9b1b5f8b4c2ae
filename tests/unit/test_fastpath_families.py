"""Each tree family the fast path compiles, trained here on a few hundred rows, proven bit-exact.

`build` checks 200k rows (every threshold and one float32 step either side, NaN rows, random
rows) against the model's predict and predict_proba; `recheck` then compares again on rows the
build did not choose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from model_api.fastpath import ColumnSpec, build_fast_path
from tests.unit.fastpath_support import CATEGORICAL, NUMERIC, build, converter, recheck, specs_for, table


def _with_categories(final: Any) -> Pipeline:
    """The categorical columns one-hot encoded (ignoring unknown ones), numbers passed through."""
    features = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL)],
        remainder="passthrough",
    )
    return Pipeline([("features", features), ("model", final)])


def _fit(model: Any, regression: bool, nan: bool, categories: bool = False) -> tuple[Any, Any]:
    frame, label, score = table(nan=nan)
    if not categories:
        frame = frame[NUMERIC]
    model.fit(frame, score if regression else label)
    return model, frame


SKLEARN = [
    ("random forest", RandomForestClassifier(n_estimators=30, random_state=0), False, True),
    ("random forest regressor", RandomForestRegressor(n_estimators=20, random_state=0), True, True),
    ("extra trees", ExtraTreesClassifier(n_estimators=30, random_state=0), False, True),
    ("extra trees regressor", ExtraTreesRegressor(n_estimators=20, random_state=0), True, False),
    ("gradient boosting", GradientBoostingClassifier(n_estimators=40, random_state=0), False, False),
    ("gradient boosting regressor", GradientBoostingRegressor(n_estimators=40, random_state=0), True, False),
    ("hist gradient boosting", HistGradientBoostingClassifier(max_iter=20, random_state=0), False, True),
    (
        "hist gradient boosting regressor",
        HistGradientBoostingRegressor(max_iter=20, random_state=0),
        True,
        True,
    ),
]


@pytest.mark.parametrize(
    ("model", "regression", "nan"), [c[1:] for c in SKLEARN], ids=[c[0] for c in SKLEARN]
)
def test_sklearn_family_is_bit_exact(model: Any, regression: bool, nan: bool) -> None:
    model, frame = _fit(_with_categories(model), regression, nan, categories=True)
    fast, reason = build(model, frame)
    assert fast is not None, reason
    assert "identical to the model on 200000 rows (" in reason
    assert fast.has_probabilities is not regression
    recheck(fast, model, frame)


def test_xgboost_is_bit_exact() -> None:
    xgboost = pytest.importorskip("xgboost")
    for model, regression in (
        (xgboost.XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1), False),
        (xgboost.XGBRegressor(n_estimators=30, max_depth=4, n_jobs=1), True),
    ):
        model, frame = _fit(model, regression, nan=True)
        fast, reason = build(model, frame)
        assert fast is not None, reason
        recheck(fast, model, frame)


def test_lightgbm_is_bit_exact() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    for model, regression in (
        (lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1, n_jobs=1), False),
        (lightgbm.LGBMRegressor(n_estimators=30, num_leaves=15, verbose=-1, n_jobs=1), True),
    ):
        model, frame = _fit(model, regression, nan=True)
        fast, reason = build(model, frame)
        assert fast is not None, reason
        recheck(fast, model, frame)


def test_nan_goes_where_the_trees_send_it() -> None:
    model, frame = _fit(RandomForestClassifier(n_estimators=10, random_state=0), False, nan=True)
    fast, _ = build(model, frame, n_rows=20_000)
    assert fast is not None
    columns = {c: [frame[c].iloc[0].item()] * 2 for c in NUMERIC}
    columns["income"] = [float("nan"), 1e5]
    _, proba = fast.predict(columns, 2, True)
    assert proba is not None
    expected = model.predict_proba(converter(specs_for(frame))(columns))
    assert (proba.view(np.uint64) == expected.view(np.uint64)).all()
    assert fast.fallbacks == 0


def test_native_boosters_are_bit_exact() -> None:
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    frame, label, _ = table(nan=True)
    numeric = frame[["income", "visits", "ratio", "age"]]
    binary = (label > 0).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 4, "nthread": 1}
    booster = xgboost.train(params, xgboost.DMatrix(numeric, label=binary), num_boost_round=20)
    lgb = lightgbm.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(numeric, label=binary),
        num_boost_round=20,
    )
    for model, answer in ((booster, booster.inplace_predict), (lgb, lgb.predict)):
        fast, reason = build(model, numeric)
        assert fast is not None, reason
        assert not fast.has_probabilities
        columns = {c: numeric[c].head(50).tolist() for c in numeric.columns}
        labels, proba = fast.predict(columns, 50, False)
        expected = np.asarray(answer(converter(specs_for(numeric))(columns)))
        assert proba is None and labels.dtype == expected.dtype
        assert (labels.view(f"u{labels.itemsize}") == expected.view(f"u{labels.itemsize}")).all()


def test_a_tensor_signature_model_is_bit_exact() -> None:
    """A model fitted on a bare array: the server hands it a 2-D array, columns by position."""
    frame, label, _ = table()
    X = frame[["income", "visits", "age"]].to_numpy(dtype=np.float64)
    model = _with_scaler(RandomForestClassifier(n_estimators=10, random_state=0)).fit(X, label)
    specs = [ColumnSpec(f"x{i}", "double") for i in range(3)]

    def to_array(columns: Any) -> np.ndarray:
        return np.array([columns[s.name] for s in specs], dtype=np.float64).T

    fast, reason = build_fast_path(model, specs, to_array, n_random=50_000)
    assert fast is not None, reason
    columns = {f"x{i}": X[:20, i].tolist() for i in range(3)}
    _, proba = fast.predict(columns, 20, True)
    assert proba is not None and (proba.view(np.uint64) == model.predict_proba(X[:20]).view(np.uint64)).all()


def _with_scaler(final: Any) -> Pipeline:
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("model", final)])
