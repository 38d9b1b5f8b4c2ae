"""Preprocessing in front of the trees, models the compiler refuses, and the check proven able to fail."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from model_api import demo
from model_api.fastpath import ColumnSpec, build_fast_path
from model_api.fastpath import build as build_module
from model_api.fastpath import preprocess as preprocess_module
from model_api.fastpath import trees as trees_module
from model_api.fastpath.build import BATCH_SIZES, by_batch_size
from model_api.fastpath.stacked import Tree
from model_api.fastpath.trees import Evaluator
from tests.unit.fastpath_support import (
    CATEGORICAL,
    UNKNOWN,
    build,
    build_demo,
    converter,
    demo_specs,
    recheck,
    table,
)


def test_the_demo_pipeline_is_bit_exact() -> None:
    fast, reason, model, frame = build_demo(600, 30, 200_000)
    assert fast is not None, reason
    # the compiled walk by levels for large batches; by rows (timed at load) may answer small ones
    assert re.match(r"(\S.* up to \d+ rows?, )?compiled tree walk( above)?: ColumnTransformer -> ", reason)
    columns = {c: frame[c].head(3).tolist() for c in frame.columns}
    labels, proba = fast.predict(columns, 3, True)
    assert proba is not None
    expected = model.predict_proba(frame.head(3))
    assert (proba.view(np.uint64) == expected.view(np.uint64)).all()
    assert labels.tolist() == model.predict(frame.head(3)).tolist()
    # handle_unknown='error': the fast path hands the row to the model, which raises its own error
    columns["contract"] = ["no-such-contract", "one-year", "two-year"]
    with pytest.raises(ValueError, match="unknown categories"):
        fast.predict(columns, 3, True)
    assert fast.fallbacks == 1
    # an integer beyond 2**53 (either sign, any integer column) is the model's to answer
    columns = {c: frame[c].head(3).tolist() for c in frame.columns}
    ints = [s.name for s in demo_specs(frame) if s.kind == "long"]
    assert len(ints) >= 2
    for name, value in ((ints[0], 2**53), (ints[-1], -(2**53))):
        fast.predict({**columns, name: [value, 1, 2]}, 3, True)
    assert fast.fallbacks == 1, "2**53 itself is exact in float64"
    for name, value in ((ints[0], 2**53 + 1), (ints[-1], -(2**53) - 1)):
        fast.predict({**columns, name: [1, value, 2]}, 3, True)
    assert fast.fallbacks == 3


def _every_transformer() -> Pipeline:
    numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", RobustScaler())])
    flags = Pipeline([("impute", SimpleImputer(add_indicator=True)), ("scale", MinMaxScaler())])
    features = ColumnTransformer(
        [
            ("numbers", numbers, ["income"]),
            ("flags", flags, ["ratio"]),
            ("missing", MissingIndicator(features="all"), ["income", "ratio"]),
            ("visits", MaxAbsScaler(), ["visits"]),
            ("age", StandardScaler(), ["age"]),
            ("plan", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["plan"]),
            ("region", OneHotEncoder(handle_unknown="ignore", drop="first"), ["region"]),
            ("unused", "drop", ["member"]),
        ]
    )
    return Pipeline(
        [("features", features), ("model", RandomForestClassifier(n_estimators=20, random_state=0))]
    )


def test_every_supported_transformer_is_bit_exact() -> None:
    frame, label, _ = table(nan=True)
    model = _every_transformer().fit(frame, label)
    fast, reason = build(model, frame)
    assert fast is not None, reason
    recheck(fast, model, frame)
    columns = {c: frame[c].head(2).tolist() for c in frame.columns}
    columns["plan"] = [UNKNOWN, "pro"]
    columns["income"] = [float("nan"), 5.0]
    got = fast.predict(columns, 2, True)
    expected = model.predict_proba(converter([s for s in _specs(frame)])(columns))
    assert got[1] is not None and (got[1].view(np.uint64) == expected.view(np.uint64)).all()


def _specs(frame: Any) -> list[ColumnSpec]:
    from tests.unit.fastpath_support import specs_for

    return specs_for(frame)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (
            Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]),
            "the final step is a LogisticRegression",
        ),
        (
            Pipeline(
                [("log", FunctionTransformer(np.log1p)), ("model", RandomForestClassifier(n_estimators=3))]
            ),
            "cannot compile: a FunctionTransformer step",
        ),
    ],
    ids=["linear final step", "custom transformer"],
)
def test_a_model_the_compiler_cannot_take_is_refused_with_a_reason(model: Any, why: str) -> None:
    frame, label, _ = table()
    numeric = frame[["income", "visits", "age"]]
    model.fit(numeric, label)
    fast, reason = build(model, numeric)
    assert fast is None
    assert reason.startswith(why)


def test_gradient_boosting_refuses_nan_as_the_model_does() -> None:
    frame, label, _ = table()
    numeric = frame[["income", "visits", "ratio"]]
    model = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(numeric, label)
    fast, reason = build(model, numeric, n_rows=20_000)
    assert fast is not None, reason
    columns = {"income": [float("nan")], "visits": [3], "ratio": [0.5]}
    with pytest.raises(ValueError, match="NaN"):
        fast.predict(columns, 1, False)


def test_an_evaluator_one_float32_step_off_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: thresholds moved up by one float32 step are caught."""
    frame, label, _ = table()
    numeric = frame[["income", "visits", "ratio", "age"]]
    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(numeric, label)
    assert build(model, numeric, n_rows=50_000)[0] is not None

    original = trees_module._sk_tree

    def nudged(*args: Any, **kwargs: Any) -> Tree:
        tree = original(*args, **kwargs)
        t32 = np.nextafter(tree.threshold.astype(np.float32), np.float32(np.inf))
        return dataclasses.replace(tree, threshold=t32.astype(np.float64))

    monkeypatch.setattr(trees_module, "_sk_tree", nudged)  # every evaluator of the model reads them
    fast, reason = build(model, numeric, n_rows=50_000)
    assert fast is None
    assert "differ" in reason


def test_categories_unknown_to_an_ignoring_encoder_are_answered() -> None:
    frame, label, _ = table()
    model = Pipeline(
        [
            ("features", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)])),
            ("model", RandomForestClassifier(n_estimators=10, random_state=0)),
        ]
    ).fit(frame[CATEGORICAL], label)
    fast, reason = build(model, frame[CATEGORICAL], n_rows=20_000)
    assert fast is not None, reason
    labels, _ = fast.predict({"plan": ["gold"], "region": ["north"]}, 1, False)
    assert labels.tolist() == model.predict(frame[CATEGORICAL].head(1).assign(plan="gold")).tolist()
    assert fast.fallbacks == 0


def test_preprocessing_rounded_to_float32_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check sees the scaler's arithmetic too: scaling in float32 instead of float64 is caught."""
    frame, label = demo.make_churn_table(600)
    model = demo.build_pipeline(n_trees=10).fit(frame, label)
    specs = demo_specs(frame)
    monkeypatch.setattr(preprocess_module, "float_dtype", lambda cols: np.dtype(np.float32))
    fast, reason = build_fast_path(model, specs, converter(specs), n_random=50_000)
    assert fast is None
    assert "differ" in reason


def test_string_labels_come_back_as_the_model_gives_them() -> None:
    frame, label, _ = table()
    numeric = frame[["income", "visits", "age"]]
    names = np.array(["low", "mid", "high"], dtype=object)[label]
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(numeric, names)
    fast, reason = build(model, numeric, n_rows=20_000)
    assert fast is not None, reason
    columns = {c: numeric[c].head(5).tolist() for c in numeric.columns}
    labels, _ = fast.predict(columns, 5, False)
    assert labels.dtype == object and labels.tolist() == model.predict(numeric.head(5)).tolist()


def test_a_pair_of_evaluators_splits_batches_by_size() -> None:
    """Small batches to one evaluator, larger ones to the other: each row is answered whole by one
    of two evaluators that were both checked exact, so its batch never changes its answer."""
    seen: list[tuple[str, int]] = []

    def evaluator(name: str) -> Evaluator:
        def run(X: np.ndarray, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
            seen.append((name, X.shape[0]))
            return np.zeros(X.shape[0]), None

        return Evaluator(name, run, False, True, {0: np.array([0.5])}, 3)

    pair = by_batch_size(evaluator("small"), 16, evaluator("large"))
    for n in (1, 16, 17, 300):
        pair.run(np.zeros((n, 2)), False)
    assert seen == [("small", 1), ("small", 16), ("large", 17), ("large", 300)]
    assert pair.name == "small up to 16 rows, large above" and pair.n_trees == 3 and pair.float32
    assert by_batch_size(evaluator("small"), 1, evaluator("large")).name == "small up to 1 row, large above"


def test_the_small_batch_walk_is_timed_on_rows_it_has_not_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load times the small-batch evaluator against the large one on new rows every time: a
    branching walk timed on the same rows again and again has its branches learned by the
    processor and looks faster than it is. On a clock the evaluators advance themselves (no real
    time): "large" costs 2 a row; "small" costs 1 a row it has seen and 3 a row it has not, the cost
    of a branching walk whose predictor has or has not learned its rows. On rows it has not seen it
    is slower at every size, so it answers no batch size."""
    now = [0.0]
    monkeypatch.setattr(build_module.time, "perf_counter", lambda: now[0])
    seen_rows: set[bytes] = set()

    def run_small(X: np.ndarray, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        for row in X:
            key = row.tobytes()
            now[0] += 1.0 if key in seen_rows else 3.0
            seen_rows.add(key)
        return np.zeros(X.shape[0]), None

    def run_large(X: np.ndarray, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        now[0] += 2.0 * X.shape[0]
        return np.zeros(X.shape[0]), None

    thresholds = {0: np.array([-1.0, 1.0]), 1: np.array([0.0, 5.0])}
    large = Evaluator("large", run_large, False, True, thresholds, 3)
    assert (
        build_module._small_batch_partner(large, [lambda: Evaluator("small", run_small, False, True)], 2)
        is None
    )
    # one that costs 1 a row whatever the rows is faster at every size

    def run_fast(X: np.ndarray, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        now[0] += 1.0 * X.shape[0]
        return np.zeros(X.shape[0]), None

    fast = Evaluator("fast", run_fast, False, True)
    assert build_module._small_batch_partner(large, [lambda: fast], 2) == (fast, max(BATCH_SIZES))


def test_a_fitted_missing_category_is_encoded_where_the_encoders_put_it() -> None:
    """An encoder fitted on a string column with missing values holds NaN as a category (one-hot: its
    own column; ordinal: `encoded_missing_value`); a missing value in a request must land there, not
    with the unknown values."""
    frame, label, _ = table()
    frame["region"] = frame["region"].where(np.random.default_rng(3).random(len(frame)) > 0.2, np.nan)
    features = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["region"]),
            (
                "ordinal",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
                ),
                ["region"],
            ),
            ("numbers", "passthrough", ["income", "visits"]),
        ]
    )
    model = Pipeline(
        [("features", features), ("model", RandomForestClassifier(n_estimators=10, random_state=0))]
    )
    model.fit(frame, label)
    onehot = model.named_steps["features"].named_transformers_["onehot"]
    assert any(isinstance(c, float) and np.isnan(c) for c in onehot.categories_[0].tolist())
    fast, reason = build(model, frame)
    assert fast is not None, reason
    recheck(fast, model, frame)
    columns = {c: frame[c].head(4).tolist() for c in frame.columns}
    columns["region"] = [float("nan"), "north", UNKNOWN, float("nan")]
    expected = model.predict_proba(converter(_specs(frame))(columns))
    got = fast.predict(columns, 4, True)
    assert got[1] is not None and (got[1].view(np.uint64) == expected.view(np.uint64)).all()
    transformed = model.named_steps["features"].transform(converter(_specs(frame))(columns))
    assert transformed[0].tolist() != transformed[2].tolist()  # missing is not unknown here
