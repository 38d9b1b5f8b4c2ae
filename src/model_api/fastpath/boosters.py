"""XGBoost and LightGBM evaluators: treelite GTIL first, the library's own predict second.

Each repeats the scikit-learn wrapper's last steps on the booster's output: XGBClassifier labels
are `probability > 0.5` (binary) or argmax, probabilities `xgboost.sklearn._cls_predict_proba`
(float32, as the model returns them); LGBMClassifier stacks `1.0 - p, p` (float64) and maps the
argmax through its label encoder (`lightgbm/sklearn.py`). A native Booster's answer is its output.

Measured with the 200k-row check (xgboost 3.2, lightgbm 4.7, treelite 4.8): GTIL is exact for
LightGBM binary classifiers and regressors; it is not for LightGBM multi-class (every probability
differs) nor for XGBoost (binary and multi-class probabilities, regression values differ in
their last bits; the cause was not traced). Those are served by the library's own
predict on the preprocessed array (`inplace_predict` with the wrapper's iteration range and
`missing`; `Booster.predict`), which is the model's own arithmetic without the DataFrame.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from model_api.fastpath.preprocess import Unsupported
from model_api.fastpath.trees import Evaluator, Result, gtil


def _xgb_thresholds(booster: Any) -> dict[int, np.ndarray]:
    names = booster.feature_names
    position = {n: i for i, n in enumerate(names)} if names else {}
    found: dict[int, list[float]] = {}
    for dump in booster.get_dump(dump_format="json"):
        stack = [json.loads(dump)]
        while stack:
            node = stack.pop()
            stack += node.get("children", [])
            if "split_condition" not in node:  # a leaf, or a split on an indicator (boolean)
                continue
            name = str(node["split"])
            index = position.get(name, int(name[1:]) if name[:1] == "f" and name[1:].isdigit() else -1)
            if index < 0:
                raise Unsupported("an XGBoost split on a feature it does not name")
            found.setdefault(index, []).append(float(node["split_condition"]))
    return {f: np.unique(np.asarray(v)) for f, v in found.items()}


def _lgb_thresholds(booster: Any) -> dict[int, np.ndarray]:
    found: dict[int, list[float]] = {}
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            if node.get("decision_type", "<=") != "<=":
                raise Unsupported("LightGBM categorical splits")
            found.setdefault(int(node["split_feature"]), []).append(float(node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
    return {f: np.unique(np.asarray(v)) for f, v in found.items()}


Finish = Callable[[np.ndarray, bool], Result]
Makers = list[Callable[[], Evaluator]]


def _xgb_makers(booster: Any, finish: Finish, classifier: bool, **predict: Any) -> Makers:
    thresholds = _xgb_thresholds(booster)
    n_trees = len(booster.get_dump())

    def with_treelite() -> Evaluator:
        import treelite

        predict = gtil(treelite.frontend.from_xgboost(booster))

        def run(X: np.ndarray, probabilities: bool) -> Result:
            out = predict(X.astype(np.float32)).reshape(X.shape[0], -1)
            return finish(out[:, 0] if out.shape[1] == 1 else out, probabilities)

        return Evaluator("treelite GTIL", run, classifier, True, thresholds, n_trees)

    def with_library() -> Evaluator:
        def run(X: np.ndarray, probabilities: bool) -> Result:
            out = booster.inplace_predict(X.astype(np.float32), validate_features=False, **predict)
            return finish(np.asarray(out), probabilities)

        return Evaluator("xgboost inplace_predict", run, classifier, True, thresholds, n_trees)

    return [with_treelite, with_library]


def xgboost_candidates(est: Any) -> Makers:
    """XGBClassifier / XGBRegressor: labels and probabilities as the wrapper computes them."""
    from xgboost.sklearn import _cls_predict_proba

    classifier = hasattr(est, "classes_")
    objective = str(est.objective)
    if classifier and not objective.startswith(("binary:logistic", "multi:softprob")):
        raise Unsupported(f"XGBoost objective {objective}")
    n_classes = int(getattr(est, "n_classes_", 0))

    def finish(out: np.ndarray, probabilities: bool) -> Result:
        if not classifier:
            return out, None
        if out.ndim > 1 and n_classes != 2:
            labels = np.argmax(out, axis=1)
        else:
            labels = np.repeat(0, out.shape[0])
            labels[out > 0.5] = 1
        return labels, _cls_predict_proba(n_classes, out, np.vstack) if probabilities else None

    ranged = {"iteration_range": est._get_iteration_range(None), "missing": est.missing}
    return _xgb_makers(est.get_booster(), finish, classifier, **ranged)


def _as_is(out: np.ndarray, probabilities: bool) -> Result:
    return out, None


def xgboost_booster_candidates(booster: Any) -> Makers:
    """A native xgboost.Booster: its `inplace_predict` output is the answer."""
    return _xgb_makers(booster, _as_is, False)


def _lgb_makers(booster: Any, finish: Finish, classifier: bool) -> Makers:
    thresholds = _lgb_thresholds(booster)
    n_trees = int(booster.num_trees())

    def with_treelite() -> Evaluator:
        import treelite

        predict = gtil(treelite.frontend.from_lightgbm(booster))

        def run(X: np.ndarray, probabilities: bool) -> Result:
            out = predict(X).reshape(X.shape[0], -1)
            return finish(out[:, 0] if out.shape[1] == 1 else out, probabilities)

        return Evaluator("treelite GTIL", run, classifier, False, thresholds, n_trees)

    def with_library() -> Evaluator:
        def run(X: np.ndarray, probabilities: bool) -> Result:
            return finish(np.asarray(booster.predict(X, validate_features=False)), probabilities)

        return Evaluator("lightgbm Booster.predict", run, classifier, False, thresholds, n_trees)

    return [with_treelite, with_library]


def lightgbm_candidates(est: Any) -> Makers:
    """LGBMClassifier / LGBMRegressor: labels and probabilities as the wrapper computes them."""
    classifier = hasattr(est, "classes_")
    if callable(est._objective):
        raise Unsupported("a LightGBM model with a custom objective")

    def finish(out: np.ndarray, probabilities: bool) -> Result:
        if not classifier:
            return out, None
        proba = np.vstack((1.0 - out, out)).transpose() if out.ndim == 1 else out
        return est._le.inverse_transform(np.argmax(proba, axis=1)), proba if probabilities else None

    return _lgb_makers(est.booster_, finish, classifier)


def lightgbm_booster_candidates(booster: Any) -> Makers:
    """A native lightgbm.Booster: its `predict` output is the answer."""
    return _lgb_makers(booster, _as_is, False)
