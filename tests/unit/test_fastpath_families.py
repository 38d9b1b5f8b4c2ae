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
    ("hist gradient boosting", HistGradientBoostingClassifier(max_iter=40, random_state=0), False, True),
    (
        "hist gradient boosting regressor",
        HistGradientBoostingRegressor(max_iter=40, random_state=0),
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
    assert "identical to the model on 200000 rows" in reason
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
