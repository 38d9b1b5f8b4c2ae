"""Compile a fitted tree model (alone or behind a preprocessing pipeline) and prove it exact.

`build_fast_path(model, columns, to_frame)` returns `(FastPath, reason)` or `(None, reason)`:
it picks the model's family, compiles the preprocessing, then tries the family's evaluators in
order of preference and keeps the first one the check (`verify.py`) finds bit-identical. When a
later evaluator answers small batches faster (timed at load), it answers those, if the check finds
it bit-identical too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from model_api.fastpath import verify
from model_api.fastpath.boosters import (
    lightgbm_booster_candidates,
    lightgbm_candidates,
    xgboost_booster_candidates,
    xgboost_candidates,
)
from model_api.fastpath.path import ColumnSpec, FastPath, ToFrame, reference
from model_api.fastpath.preprocess import Fallback, Origin, Step, Unsupported, compile_steps
from model_api.fastpath.trees import (
    Evaluator,
    Result,
    forest_candidates,
    gradient_boosting_candidates,
    hist_gradient_boosting_candidates,
)

logger = logging.getLogger(__name__)

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
    model: Any, columns: Sequence[ColumnSpec], to_frame: ToFrame, *, seed: int, n_random: int, chunk: int
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

    def fast_path(evaluator: Evaluator) -> FastPath:
        description = f"{evaluator.name}: {pipeline} ({evaluator.n_trees} trees)"
        return FastPath(model, to_frame, names, dtypes, prep, evaluator, limits, description)

    def check(evaluator: Evaluator) -> tuple[FastPath, str | None, str]:
        fast = fast_path(evaluator)
        return fast, *_check(fast, columns, to_frame, evaluator, prep, seed, n_random, chunk)

    for i, make in enumerate(makers):
        try:  # built and run once on a row of zeros: one that cannot do either is skipped
            evaluator = make()
            evaluator.run(np.zeros((1, n_features)), evaluator.has_probabilities)
        except Exception as exc:
            reasons.append(f"{make.__name__}: {type(exc).__name__}")
            continue
        fast, failure, rows = check(evaluator)
        if failure is None:
            small = _small_batch_partner(evaluator, makers[i + 1 :], n_features)
            if small is not None:
                # Checked alone, on the same rows in large batches: its rows are answered one by one
                # (no row depends on another), so it is exact for a batch of any size.
                _, failure, _ = check(small[0])
                if failure is None:
                    fast = fast_path(by_batch_size(*small, evaluator))
                else:  # the large-batch evaluator alone is exact: it serves every batch
                    logger.info("fast path: %s is not exact: %s", small[0].name, failure)
            took = time.perf_counter() - started
            logger.info("fast path %s verified on %s in %.1f s", fast.description, rows, took)
            return fast, f"{fast.description}; identical to the model on {rows}"
        reasons.append(f"{evaluator.name}: {failure}")
    return None, "not exact: " + "; ".join(reasons)


BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


TIMING_REPEAT = 15


def _faster(small: Evaluator, large: Evaluator, X: np.ndarray, n: int, repeat: int = TIMING_REPEAT) -> bool:
    """Whether `small` answers batches of `n` rows faster than `large` (medians of `repeat` timings
    each). Every repetition of a size takes new rows of `X` (at least `n * repeat`; each size
    starts again from the first row, so about half of a size's repetitions reuse rows the previous,
    smaller size timed), the two evaluators the same ones, in turns, the first of them alternating.
    Timing the same rows over and over taught the processor's branch predictor the branching
    walk's path: the walk by rows looked faster up to 16-64 rows where, on rows it has not seen,
    the walk by levels is twice as fast from 8 rows on (demo forest, 8 rows 60 -> 28 us, 64 rows
    354 -> 157 us); and timing one evaluator's runs after the other's let a change in the
    machine's speed between the two decide (the load picked 16, 32 and 64 rows on three loads of
    the same model)."""
    small_s: list[float] = []
    large_s: list[float] = []
    for k in range(repeat):
        rows = X[k * n : (k + 1) * n]
        turns = ((small, small_s), (large, large_s)) if k % 2 else ((large, large_s), (small, small_s))
        for evaluator, times in turns:
            started = time.perf_counter()
            evaluator.run(rows, True)
            times.append(time.perf_counter() - started)
    return float(np.median(small_s)) < float(np.median(large_s))


def _small_batch_partner(
    large: Evaluator, others: Sequence[Callable[[], Evaluator]], n_features: int
) -> tuple[Evaluator, int] | None:
    """Another of the family's evaluators that answers small batches faster than `large` (timed
    here, on `_timing_rows`, new rows at each repetition of a size, at 1 to 128 rows), the largest
    batch size it is faster at; None when none is. On the demo forest (measured, `_faster`): the
    compiled walk by rows takes 12 us for one row where the walk by levels takes 14 us, but 354 us
    for 64 rows against 157 (`compiled.py`); without numba, scikit-learn's Tree.apply costs ~3 us a
    tree whatever the batch (0.3 ms for one row) where GTIL takes 0.05 ms, and GTIL takes twice as
    long from 64 rows on."""
    X = _timing_rows(large.thresholds, n_features, max(BATCH_SIZES) * TIMING_REPEAT, np.random.default_rng(0))
    for make in others:
        try:
            small = make()
            small.run(X[:1], True)
        except Exception as exc:  # the large-batch evaluator, checked exact, serves alone
            logger.info("fast path: %s not tried for small batches (%s)", make.__name__, type(exc).__name__)
            continue
        max_rows = 0
        for n in BATCH_SIZES:
            if not _faster(small, large, X, n):
                break
            max_rows = n
        if max_rows:
            return small, max_rows
    return None


def _timing_rows(
    thresholds: Mapping[int, np.ndarray], n_features: int, n_rows: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows spread as the trees' inputs are: each feature uniform between its smallest and largest
    finite split value (0 where no split reads it). Standard normal rows, as before, all go the
    same way at every split of an unscaled feature (incomes, ages), which a branching walk predicts
    perfectly: the walk by rows was picked up to 128 rows where it is 2-2.6x slower from 32 rows on
    (a forest on unscaled columns, measured by a review)."""
    X = np.zeros((n_rows, n_features))
    for j, values in thresholds.items():
        finite = values[np.isfinite(values)]
        if j < n_features and len(finite):
            X[:, j] = rng.uniform(finite.min(), finite.max(), n_rows)
    return X


def by_batch_size(small: Evaluator, max_rows: int, large: Evaluator) -> Evaluator:
    """`small` for batches of up to `max_rows` rows, `large` above. Both must have been checked
    exact on their own: then a row's answer is the same whichever answers it, whatever its batch."""

    def run(X: np.ndarray, probabilities: bool) -> Result:
        return (small if X.shape[0] <= max_rows else large).run(X, probabilities)

    return Evaluator(
        f"{small.name} up to {max_rows} row{'' if max_rows == 1 else 's'}, {large.name} above",
        run,
        large.has_probabilities,
        large.float32,
        large.thresholds,
        large.n_trees,
    )


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
    placed = edges
    budget = int(0.75 * n_rows)
    total = sum(len(v) for v in edges.values())
    if total > budget:
        placed = {
            j: np.sort(rng.choice(v, int(len(v) * budget / total), replace=False)) for j, v in edges.items()
        }
    # The rows that take the threshold values hold neither NaN nor unknown categories elsewhere,
    # so that both walks by levels (with and without the NaN test) are checked on every one.
    n_placed = min(n_rows, sum(len(v) for v in placed.values()))
    rows = verify.random_rows(cols, edges, n_rows, rng, clean_first=n_placed)
    on_edges = verify.place_edges(rows, cols, placed)
    with_nan = int(verify.has_nan(rows).sum())
    without_nan = 0
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
            if evaluator.walks_without_nan:
                checked, failure = _check_without_nan(fast, part, expected)
                if failure is not None:
                    return failure, ""
                without_nan += checked
    if evaluator.walks_without_nan and not without_nan:
        return "no checked row reached the trees without a NaN: the walk for such batches is unchecked", ""
    return None, f"{n_rows} rows ({on_edges} on split thresholds or one step off, {with_nan} with a NaN)"


def _check_without_nan(
    fast: FastPath, part: Mapping[str, list[Any]], expected: tuple[np.ndarray, np.ndarray | None]
) -> tuple[int, str | None]:
    """The rows of `part` that reach the trees without a NaN, answered again on their own: (how
    many, None when identical to `expected`'s, else what differs). The compiled walk by levels
    answers a batch without NaN by a walk without the NaN test (`compiled.py`): checked here on
    those rows, since a batch holding one NaN takes the other walk. Every family hands the walks its
    matrix's NaN as they are (rounding to float32 keeps a NaN and makes none)."""
    clean = ~np.isnan(fast.matrix(part)).any(axis=1)
    if clean.all() or not clean.any():  # the batch itself went without NaN; or none went so
        return int(clean.sum()), None
    keep = np.flatnonzero(clean).tolist()
    got = fast.evaluate({k: [v[i] for i in keep] for k, v in part.items()}, fast.has_probabilities)
    labels, probabilities = expected
    own = labels[clean], None if probabilities is None else probabilities[clean]
    failure = verify.compare(own, got)
    return len(keep), None if failure is None else f"{failure} (rows without a NaN, alone)"


def _falls_back(fast: FastPath, row: Mapping[str, list[Any]]) -> bool:
    try:
        fast.evaluate(row, False)
    except (Fallback, ValueError, TypeError):
        return True
    return False
