"""Compile a fitted tree model (alone or behind a preprocessing pipeline) and prove it exact.

`build_fast_path(model, columns, to_frame)` returns `(FastPath, reason)` or `(None, reason)`.
A FastPath answers from the request's columns with numpy preprocessing and a tree evaluator; no
DataFrame. A request the model would refuse (an unknown category under handle_unknown='error', a
NaN the trees do not take, a value that overflows float32 after scaling) is handed to the model
itself, which raises its own error, so errors stay the model's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_api.fastpath import verify
from model_api.fastpath.boosters import (
    lightgbm_booster_candidates,
    lightgbm_candidates,
    xgboost_booster_candidates,
    xgboost_candidates,
)
from model_api.fastpath.preprocess import Fallback, Origin, Step, Unsupported, compile_steps
from model_api.fastpath.trees import (
    Evaluator,
    forest_candidates,
    gradient_boosting_candidates,
    hist_gradient_boosting_candidates,
)

logger = logging.getLogger(__name__)
_EXACT_INT = 2**53

ToFrame = Callable[[Mapping[str, list[Any]]], Any]
_FAMILIES: dict[str, Callable[[Any], list[Callable[[], Evaluator]]]] = {
    "RandomForestClassifier": forest_candidates,
    "RandomForestRegressor": forest_candidates,
    "ExtraTreesClassifier": forest_candidates,
    "ExtraTreesRegressor": forest_candidates,
    "GradientBoostingClassifier": gradient_boosting_candidates,
    "GradientBoostingRegressor": gradient_boosting_candidates,
    "HistGradientBoostingClassifier": hist_gradient_boosting_candidates,
    "HistGradientBoostingRegressor": hist_gradient_boosting_candidates,
    "XGBClassifier": xgboost_candidates,
    "XGBRegressor": xgboost_candidates,
    "LGBMClassifier": lightgbm_candidates,
    "LGBMRegressor": lightgbm_candidates,
    "xgboost.core.Booster": xgboost_booster_candidates,
    "lightgbm.basic.Booster": lightgbm_booster_candidates,
}


def _family(est: Any) -> Callable[[Any], list[Callable[[], Evaluator]]] | None:
    kind = type(est)
    return _FAMILIES.get(kind.__name__) or _FAMILIES.get(f"{kind.__module__}.{kind.__name__}")


def reference(model: Any) -> Callable[[Any, bool], tuple[np.ndarray, np.ndarray | None]]:
    """What the model itself answers for a frame: (labels, probabilities when asked)."""
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if kind == "xgboost.core.Booster":
        return lambda frame, probabilities: (np.asarray(model.inplace_predict(frame)), None)
    if kind == "lightgbm.basic.Booster":
        return lambda frame, probabilities: (np.asarray(model.predict(frame)), None)

    def answer(frame: Any, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        labels = np.asarray(model.predict(frame))
        return labels, np.asarray(model.predict_proba(frame)) if probabilities else None

    return answer


@dataclass(frozen=True)
class ColumnSpec:
    """A request column: its signature name and MLflow ColSpec type."""

    name: str
    kind: str  # "double" | "float" | "long" | "integer" | "boolean" | "string"


class FastPath:
    """Compiled inference for one model: `predict(columns, n_rows, probabilities)`.

    columns: validated request columns by signature name, Python lists (numbers as int/float,
    a missing number or string as float('nan'), booleans as bool, strings as str).
    Returns labels (1-D, the model's values and dtype) and, when asked, probabilities
    [n_rows, n_classes] with the model's dtype and bits. Raises what the model raises.
    """

    def __init__(
        self,
        model: Any,
        to_frame: ToFrame,
        names: Sequence[str],
        dtypes: Sequence[np.dtype[Any]],
        prep: Step,
        evaluator: Evaluator,
        limits: tuple[bool, bool],
        description: str,
    ) -> None:
        self.model, self.to_frame = model, to_frame
        self._answer = reference(model)
        self._columns = list(zip(names, dtypes, strict=True))
        self._prep, self._evaluator = prep, evaluator
        self._nan_ok, self._inf_ok = limits
        self.description = description
        self.has_probabilities = evaluator.has_probabilities
        self.fallbacks = 0
        """Requests handed to the model (each raised, or answered, as the model does)."""

    def dtype(self, name: str) -> np.dtype[Any]:
        """The dtype the server's conversion gives this column."""
        return dict(self._columns)[name]

    def evaluate(
        self, columns: Mapping[str, Sequence[Any]], probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The fast path alone; raises Fallback where the model must answer."""
        raw = [np.asarray(columns[name], dtype=dtype) for name, dtype in self._columns]
        for col in raw:
            if col.dtype.kind == "i" and ((col > _EXACT_INT) | (col < -_EXACT_INT)).any():
                # float64 holds integers exactly only up to 2**53; beyond, numpy and pandas may
                # round through different types: the model answers these.
                raise Fallback("an integer beyond 2**53")
        cols = self._prep.run(raw)
        X = np.empty((len(raw[0]), len(cols)), dtype=np.float64)
        for j, c in enumerate(cols):
            X[:, j] = c
        with np.errstate(over="ignore", invalid="ignore"):
            seen = X.astype(np.float32) if self._evaluator.float32 else X
        if not self._nan_ok and np.isnan(seen).any():
            raise Fallback("NaN reaches trees that refuse it")
        if not self._inf_ok and np.isinf(seen).any():
            raise Fallback("an infinite value reaches trees that refuse it")
        return self._evaluator.run(X, probabilities)

    def predict(
        self, columns: Mapping[str, Sequence[Any]], n_rows: int, probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            return self.evaluate(columns, probabilities)
        except Fallback:
            self.fallbacks += 1
            frame = self.to_frame({k: list(v) for k, v in columns.items()})
            return self._answer(frame, probabilities)


def _split(model: Any) -> tuple[list[Any], Any]:
    if type(model).__name__ == "Pipeline":
        steps = [s for _, s in model.steps]
        return steps[:-1], steps[-1]
    return [], model


def _accepts(est: Any, value: float, n_features: int) -> bool:
    """Whether the trees take this value (NaN, infinity) in their input, or raise.

    When they refuse even a row of zeros (an estimator that wants its DataFrame back), the probe
    says nothing and the answer is yes: the check's per-column probes then compare the fast path
    with the model on NaN itself.
    """

    def answers(x: float) -> bool:
        X = np.zeros((1, n_features))
        X[0, 0] = x
        try:
            verify.model_answers(reference(est), X, False)
        except (ValueError, TypeError):
            return False
        return True

    return answers(value) or not answers(0.0)


def _sample(spec: ColumnSpec) -> Any:
    return {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False}.get(spec.kind, "a")


def _frame_dtypes(frame: Any, names: Sequence[str]) -> list[np.dtype[Any]]:
    if isinstance(frame, np.ndarray):
        return [frame.dtype] * len(names)
    # pandas extension dtypes (its string dtype, nullable integers) hold Python objects for us
    return [d if isinstance(d := frame[n].dtype, np.dtype) else np.dtype(object) for n in names]


def build_fast_path(
    model: Any,
    columns: Sequence[ColumnSpec],
    to_frame: ToFrame,
    *,
    seed: int = 0,
    n_random: int = 200_000,
    chunk: int = 50_000,
) -> tuple[FastPath | None, str]:
    """Compile `model` and check it on `n_random` rows (threshold edges, NaN, categories, random).

    Returns the fast path and a one-line description of it and of the check, or None and why
    (one line, no input values). Never raises: a fast path that cannot be built is not served.
    """
    try:
        return _build(model, columns, to_frame, seed=seed, n_random=n_random, chunk=chunk)
    except Exception as exc:  # the model is served as it is; the reason says what broke here
        logger.exception("fast path: build failed")
        return None, f"the fast path failed to build ({type(exc).__name__})"


def _build(
    model: Any,
    columns: Sequence[ColumnSpec],
    to_frame: ToFrame,
    *,
    seed: int = 0,
    n_random: int = 200_000,
    chunk: int = 50_000,
) -> tuple[FastPath | None, str]:
    started = time.perf_counter()
    steps, final = _split(model)
    family = _family(final)
    if family is None:
        return None, f"the final step is a {type(final).__name__}, not a tree ensemble the fast path compiles"
    names = [c.name for c in columns]
    try:
        sample = to_frame({c.name: [_sample(c)] for c in columns})
        dtypes = _frame_dtypes(sample, names)
        has_names = not isinstance(sample, np.ndarray)
        origins = [Origin(j, lambda v: v) for j in range(len(columns))]
        prep = compile_steps(steps, list(origins), names if has_names else None)
        makers = family(final)
    except Unsupported as exc:
        return None, f"cannot compile: {exc}"
    n_features = len(prep.origins)
    limits = (_accepts(final, math.nan, n_features), _accepts(final, math.inf, n_features))
    pipeline = " -> ".join([*(type(s).__name__ for s in steps), type(final).__name__])
    reasons = []
    for make in makers:
        try:
            evaluator = make()
        except (ImportError, RuntimeError, ValueError) as exc:
            reasons.append(f"{make.__name__}: {type(exc).__name__}")
            continue
        description = f"{evaluator.name}: {pipeline} ({evaluator.n_trees} trees)"
        fast = FastPath(model, to_frame, names, dtypes, prep, evaluator, limits, description)
        failure, rows = _check(fast, columns, to_frame, evaluator, prep, seed, n_random, chunk)
        if failure is None:
            took = time.perf_counter() - started
            logger.info("fast path %s verified on %s in %.1f s", description, rows, took)
            return fast, f"{description}; identical to the model on {rows}"
        reasons.append(f"{evaluator.name}: {failure}")
    return None, "not exact: " + "; ".join(reasons)


def _check(
    fast: FastPath,
    specs: Sequence[ColumnSpec],
    to_frame: ToFrame,
    evaluator: Evaluator,
    prep: Step,
    seed: int,
    n_rows: int,
    chunk: int,
) -> tuple[str | None, str]:
    """(None, what was checked) when every answer is identical, else (what differs, "")."""
    rng = np.random.default_rng(seed)
    categories: dict[int, tuple[Any, ...]] = {}
    for o in prep.origins:
        if o is not None and o.categories:
            categories[o.column] = o.categories
    base = {
        c.name: [_sample(c) if c.kind != "string" else categories.get(j, ("a",))[0]]
        for j, c in enumerate(specs)
    }
    cols = []
    for j, c in enumerate(specs):
        nan_row = dict(base) | {c.name: [math.nan]}
        unknown_row = dict(base) | {c.name: [verify.UNKNOWN]}
        # NaN arrives in double, float and string columns, and in optional integer ones (float64).
        nan_ok = fast.dtype(c.name).kind in "fO" and not verify.refuses(fast._answer, to_frame, nan_row)
        unknown_ok = c.kind == "string" and not verify.refuses(fast._answer, to_frame, unknown_row)
        probes = [(nan_row, nan_ok or fast.dtype(c.name).kind not in "fO", "NaN")]
        probes.append((unknown_row, unknown_ok or c.kind != "string", "new category"))
        for row, ok, what in probes:
            if not ok and not _falls_back(fast, row):
                return f"the model refuses a {what} in {c.name}; the fast path answers", ""
        cols.append(verify.Column(c.name, c.kind, nan_ok, unknown_ok, categories.get(j, ())))
    edges = verify.threshold_values(evaluator.thresholds, prep.origins, cols, evaluator.float32)
    rows = verify.random_rows(cols, edges, n_rows, rng)
    budget = int(0.75 * n_rows)
    total = sum(len(v) for v in edges.values())
    if total > budget:
        edges = {
            j: np.sort(rng.choice(v, int(len(v) * budget / total), replace=False)) for j, v in edges.items()
        }
    on_edges = verify.place_edges(rows, cols, edges)
    with_nan = int(verify.has_nan(rows).sum())
    # The model answers each chunk in a second thread while the fast path answers it here: both
    # walk their trees without the GIL, so the check takes the longer of the two, not the sum.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastpath-check") as pool:
        for start in range(0, n_rows, chunk):
            part = {k: v[start : start + chunk].tolist() for k, v in rows.items()}
            pending = pool.submit(verify.model_answers, fast._answer, to_frame(part), fast.has_probabilities)
            try:
                got = fast.evaluate(part, fast.has_probabilities)
            except Fallback as exc:
                pending.cancel()
                return f"declined rows the model answers ({exc})", ""
            try:
                expected = pending.result()
            except (ValueError, TypeError, KeyError) as exc:
                return f"the model refused rows built from its thresholds ({type(exc).__name__})", ""
            if (failure := verify.compare(expected, got)) is not None:
                return failure, ""
    return None, f"{n_rows} rows ({on_edges} on split thresholds or one step off, {with_nan} with a NaN)"


def _falls_back(fast: FastPath, row: Mapping[str, list[Any]]) -> bool:
    try:
        fast.evaluate(row, False)
    except (Fallback, ValueError, TypeError):
        return True
    return False
