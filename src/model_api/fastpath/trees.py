"""Tree-ensemble evaluators, each repeating its library's own final arithmetic.

`candidates(estimator)` lists, in order of preference, the ways to evaluate a fitted ensemble on
a preprocessed float64 matrix [n_rows, n_features]; the builder keeps the first that verification
finds bit-exact. Each evaluator feeds its trees the input type their trainer used: float32-rounded
for scikit-learn's tree models and XGBoost, float64 for HistGradientBoosting and LightGBM.

- RandomForest / ExtraTrees: the compiled walks (`compiled.py`, numba) over the stacked trees, leaf
  values summed from zero in tree order, then divided by the tree count, as
  `ForestClassifier.predict_proba` does. Without numba: each tree's own `tree_.apply`
  (scikit-learn's Cython walk) with the same sum, then treelite GTIL (exact on the demo forest but
  not on every forest, which the load's check finds; 0.044 ms for 1 row of the demo forest, 100
  trees of depth 12, against 0.20 ms for `Tree.apply`, but 1.4 ms for 64 rows against 0.8 ms, and
  1.9 s for 50k rows, which would make the load-time check of 200k rows take over 8 s), then the
  stacked numpy evaluator.
- GradientBoosting, HistGradientBoosting: the compiled walks, then the stacked numpy evaluator (see
  `stacked.py` for why not GTIL), with the model's own `_loss.predict_proba` / link on the raw
  scores.
- XGBoost, LightGBM (scikit-learn API): treelite GTIL, then the estimator's own predict on the
  numpy matrix (the library's evaluator without the DataFrame and pipeline around it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from model_api.fastpath.compiled import CompiledTrees
from model_api.fastpath.preprocess import Unsupported
from model_api.fastpath.stacked import StackedTrees, Tree

Result = tuple[np.ndarray, np.ndarray | None]


@dataclass
class Evaluator:
    """Labels (and probabilities when asked) for a preprocessed float64 matrix."""

    name: str
    run: Callable[[np.ndarray, bool], Result]
    has_probabilities: bool
    float32: bool
    """The trees read float32-rounded inputs (the matrix is cast before they see it)."""
    thresholds: dict[int, np.ndarray] = field(default_factory=dict)
    """Split values by input feature (float64), for building the verification rows."""
    n_trees: int = 0
    walks_without_nan: bool = False
    """A matrix without NaN takes another walk (`CompiledTrees`): the check answers such rows
    again on their own (`build._check_without_nan`)."""


def walks_without_nan(stacks: Sequence[Walk]) -> bool:
    """Whether any of these walks answers a matrix without NaN by another walk."""
    return any(s.walks_without_nan for s in stacks)


def threads(X: np.ndarray) -> int:
    """One thread for a request; every core for the large batches of the verification."""
    return 1 if X.shape[0] < 4096 else 0


def gtil(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """`treelite.gtil.predict(model, X, nthread=threads(X))` for a treelite Model, with its
    configuration parsed once rather than on every call.

    `gtil.predict` builds a `GTILConfig` per call (a dataclass turned into JSON and parsed by the
    C library): one row of the demo forest took the evaluator 55 us with it, 43 without (p50 of
    3,000 calls, one core). The configurations are built here, once per thread count on first
    use, and handed to treelite's own `_predict_impl`, which `predict` calls with them; the answers
    are the same call's. If a treelite release moves that function, this falls back to `predict`
    (treelite is pinned in requirements-serve.txt; the load's exactness check runs through
    whichever is used).
    """
    import treelite.gtil

    try:
        from treelite.gtil.gtil import GTILConfig, _predict_impl
    except ImportError:  # pragma: no cover - another treelite layout
        return lambda X: np.asarray(treelite.gtil.predict(model, X, nthread=threads(X)))
    configs: dict[int, Any] = {}

    def predict(X: np.ndarray) -> np.ndarray:
        n = threads(X)
        config = configs.get(n)
        if config is None:  # once per thread count (two threads may both build it: harmless)
            config = configs[n] = GTILConfig(predict_type="default", nthread=n)
        return np.asarray(_predict_impl(model, X, config=config))

    return predict


class Walk(Protocol):
    """Trees ready to walk: `sum(X, start)` is start + tree 0 + tree 1 + ... per row of X."""

    @property
    def walks_without_nan(self) -> bool:
        """Whether a matrix without NaN takes another walk than one with (checked apart at load)."""
        ...

    def sum(self, X: np.ndarray, start: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Stack:
    """One way to walk a list of Trees: `make(trees, float32).sum(X, start)` (see stacked.py,
    compiled.py); `float32`: the trees' trainer reads float32-rounded inputs, and X is float32."""

    name: str
    make: Callable[[Sequence[Tree], bool], Walk]


NUMPY = Stack("numpy stacked trees", lambda trees, float32: StackedTrees(trees))
COMPILED = (
    Stack("compiled tree walk", lambda trees, float32: CompiledTrees(trees, float32=float32)),
    Stack(
        "compiled tree walk, row by row",
        lambda trees, float32: CompiledTrees(trees, by_rows=True, float32=float32),
    ),
)
"""The compiled walks (numba): by levels for large batches, then by rows, which the builder times
against it for small batches (`build._small_batch_partner`)."""


def _named(build: Callable[[Stack], Evaluator], kind: Stack) -> Callable[[], Evaluator]:
    def make() -> Evaluator:
        return build(kind)

    make.__name__ = kind.name
    return make


def _sk_thresholds(trees: list[Any]) -> dict[int, np.ndarray]:
    found: dict[int, list[np.ndarray]] = {}
    for t in trees:
        inner = t.children_left >= 0
        for f in np.unique(t.feature[inner]):
            found.setdefault(int(f), []).append(t.threshold[inner & (t.feature == f)])
    return {f: np.unique(np.concatenate(v)) for f, v in found.items()}


def _sk_tree(t: Any, value: np.ndarray, missing: bool = True) -> Tree:
    miss = np.asarray(t.missing_go_to_left, dtype=bool) if missing else np.zeros(t.node_count, dtype=bool)
    return Tree(t.feature, t.threshold, t.children_left, t.children_right, miss, value)


def forest_candidates(est: Any) -> list[Callable[[], Evaluator]]:
    classifier = hasattr(est, "classes_")
    trees = [e.tree_ for e in est.estimators_]
    if getattr(est, "n_outputs_", 1) != 1:
        raise Unsupported("a multi-output forest")
    thresholds = _sk_thresholds(trees)
    n_trees = len(trees)

    def finish(total: np.ndarray, probabilities: bool) -> Result:
        if classifier:
            labels = est.classes_.take(np.argmax(total, axis=1), axis=0)
            return labels, total if probabilities else None
        return total.ravel(), None

    def with_treelite() -> Evaluator:
        import treelite.sklearn

        predict = gtil(treelite.sklearn.import_model(est))

        def run(X: np.ndarray, probabilities: bool) -> Result:
            # float32-rounded values handed over as float64: GTIL reads them as such, faster.
            out = predict(X.astype(np.float32).astype(np.float64))
            return finish(np.asarray(out, dtype=np.float64).reshape(X.shape[0], -1), probabilities)

        return Evaluator("treelite GTIL", run, classifier, True, thresholds, n_trees)

    def with_apply() -> Evaluator:
        width = int(est.n_classes_) if classifier else 1
        values = [np.ascontiguousarray(t.value[:, 0, :width]) for t in trees]

        def run(X: np.ndarray, probabilities: bool) -> Result:
            X32 = np.ascontiguousarray(X, dtype=np.float32)
            total = np.zeros((X.shape[0], width))
            for tree, value in zip(trees, values, strict=True):
                # take, not value[leaves]: the same rows, 20-25% faster for 1 to 256 rows (measured)
                np.add(total, value.take(tree.apply(X32), axis=0), out=total)
            total /= n_trees
            return finish(total, probabilities)

        return Evaluator("scikit-learn Tree.apply", run, classifier, True, thresholds, n_trees)

    def with_stack(kind: Stack) -> Evaluator:
        width = int(est.n_classes_) if classifier else 1
        stack = kind.make([_sk_tree(t, t.value[:, 0, :width]) for t in trees], True)
        start = np.zeros(width)

        def run(X: np.ndarray, probabilities: bool) -> Result:
            total = stack.sum(X.astype(np.float32), start)
            total /= n_trees
            return finish(total, probabilities)

        return Evaluator(kind.name, run, classifier, True, thresholds, n_trees, walks_without_nan([stack]))

    compiled = [_named(with_stack, kind) for kind in COMPILED]
    return [*compiled, with_apply, with_treelite, _named(with_stack, NUMPY)]


def gradient_boosting_candidates(est: Any) -> list[Callable[[], Evaluator]]:
    classifier = hasattr(est, "classes_")
    init = est.init_
    if not (isinstance(init, str) and init == "zero") and type(init).__name__ not in (
        "DummyClassifier",
        "DummyRegressor",
    ):
        raise Unsupported(f"GradientBoosting with a {type(init).__name__} init estimator")
    stages = est.estimators_
    n_k = stages.shape[1]
    thresholds = _sk_thresholds([e.tree_ for e in stages.ravel()])
    start = est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32))[0]
    rate = est.learning_rate

    def build(kind: Stack) -> Evaluator:
        per_class = [
            kind.make(
                [_sk_tree(e.tree_, rate * e.tree_.value[:, 0, :1], missing=False) for e in stages[:, k]], True
            )
            for k in range(n_k)
        ]

        def run(X: np.ndarray, probabilities: bool) -> Result:
            X32 = X.astype(np.float32)
            raw = np.empty((X.shape[0], n_k))
            for k, stacked in enumerate(per_class):
                raw[:, k] = stacked.sum(X32, start[k : k + 1])[:, 0]
            if not classifier:
                return raw.ravel(), None
            decision = raw.ravel() if n_k == 1 else raw
            encoded = (decision >= 0).astype(int) if n_k == 1 else np.argmax(decision, axis=1)
            proba = est._loss.predict_proba(decision) if probabilities else None
            return est.classes_[encoded], proba

        return Evaluator(
            kind.name, run, classifier, True, thresholds, stages.size, walks_without_nan(per_class)
        )

    return [_named(build, kind) for kind in (*COMPILED, NUMPY)]


def hist_tree(nodes: np.ndarray) -> Tree:
    """One HistGradientBoosting tree (its predictor's `nodes` record array) as a Tree."""
    leaf = nodes["is_leaf"].astype(bool)
    left = np.where(leaf, -1, nodes["left"].astype(np.intp))
    right = np.where(leaf, -1, nodes["right"].astype(np.intp))
    value = nodes["value"].astype(np.float64)[:, None]
    return Tree(nodes["feature_idx"], nodes["num_threshold"], left, right, nodes["missing_go_to_left"], value)


def hist_gradient_boosting_candidates(est: Any) -> list[Callable[[], Evaluator]]:
    classifier = hasattr(est, "classes_")
    if est._preprocessor is not None or (est.is_categorical_ is not None and est.is_categorical_.any()):
        raise Unsupported("HistGradientBoosting with categorical features")
    n_k = est.n_trees_per_iteration_
    found: dict[int, list[np.ndarray]] = {}
    per_class: list[list[Tree]] = [[] for _ in range(n_k)]
    for iteration in est._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            per_class[k].append(hist_tree(nodes))
            for f in np.unique(nodes["feature_idx"][~leaf]):
                found.setdefault(int(f), []).append(
                    nodes["num_threshold"][~leaf & (nodes["feature_idx"] == f)]
                )
    thresholds = {f: np.unique(np.concatenate(v)) for f, v in found.items()}
    baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)

    def build(kind: Stack) -> Evaluator:
        stacks = [kind.make(trees, False) for trees in per_class]

        def run(X: np.ndarray, probabilities: bool) -> Result:
            raw = np.zeros((X.shape[0], n_k), order="F")
            raw += baseline
            for k, stacked in enumerate(stacks):
                raw[:, k] = stacked.sum(X, raw[:1, k].copy())[:, 0] if X.shape[0] else raw[:, k]
            if not classifier:
                return est._loss.link.inverse(raw.ravel()), None
            encoded = (raw.ravel() > 0).astype(int) if n_k == 1 else np.argmax(raw, axis=1)
            proba = est._loss.predict_proba(raw) if probabilities else None
            return est.classes_[encoded], proba

        return Evaluator(
            kind.name, run, classifier, False, thresholds, sum(map(len, per_class)), walks_without_nan(stacks)
        )

    return [_named(build, kind) for kind in (*COMPILED, NUMPY)]
