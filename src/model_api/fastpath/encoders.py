"""OneHotEncoder, OrdinalEncoder, SimpleImputer and MissingIndicator, re-done in numpy.

Encoders look values up with Python equality, as scikit-learn's `_check_unknown` does on object
columns (a NaN matches a fitted NaN category); one-hot columns are rows of an identity table in
the encoder's dtype gathered by category position, with `drop` honoured; an unknown value is all
zeros (handle_unknown='ignore') or `unknown_value` (OrdinalEncoder, 'use_encoded_value'), and
under 'error' raises Fallback so the model raises its own error. SimpleImputer fills NaN with
`statistics_` in the input's dtype (`impute/_base.py::transform`); MissingIndicator marks NaN in
its fitted `features_`.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any

import numpy as np

from model_api.fastpath.base import Cols, Fallback, Origin, Origins, Step, Unsupported, float_dtype, stack


def _index(categories: np.ndarray) -> tuple[dict[Any, int], int | None]:
    """Category -> position (Python equality), and the position of a NaN category if fitted."""
    index: dict[Any, int] = {}
    nan_at = None
    for i, c in enumerate(categories.tolist()):
        if isinstance(c, float) and math.isnan(c):
            nan_at = i
        elif c is not None:
            index.setdefault(c, i)
    return index, nan_at


def _codes(col: np.ndarray, index: dict[Any, int], nan_at: int | None) -> np.ndarray:
    """Positions of the column's values in the categories; -1 where unknown.

    Without a fitted NaN category, a NaN is unknown like any value the index lacks (the index holds
    no NaN), so the lookup runs in `map` (64 values: 8.3 -> 5.9 us)."""
    get = index.get
    values = col.tolist()
    if nan_at is None:
        return np.fromiter(map(get, values, repeat(-1)), dtype=np.int64, count=len(values))
    return np.array([nan_at if v != v else get(v, -1) for v in values], dtype=np.int64)


def encoder(step: Any, origins: Origins) -> Step:
    """OneHotEncoder (dense or sparse output: same values) and OrdinalEncoder."""
    name = type(step).__name__
    if getattr(step, "_infrequent_enabled", False):
        raise Unsupported(f"{name} with infrequent categories")
    unknown = step.handle_unknown
    if unknown not in ("error", "ignore", "use_encoded_value", "infrequent_if_exist"):
        raise Unsupported(f"{name}(handle_unknown={unknown!r})")
    indexes = [_index(np.asarray(c)) for c in step.categories_]
    cats = [tuple(np.asarray(c).tolist()) for c in step.categories_]
    dtype = np.dtype(step.dtype)
    if name == "OneHotEncoder":
        drops = getattr(step, "_drop_idx_after_grouping", None)
        tables: list[np.ndarray] = []  # per input: category position (-1: unknown) -> its slots
        for i, fitted in enumerate(step.categories_):
            drop = None if drops is None else drops[i]
            keep = [k for k in range(len(fitted)) if drop is None or k != drop]
            table = np.zeros((len(fitted) + 1, len(keep)), dtype=dtype)  # the last row: -1
            table[keep, np.arange(len(keep))] = 1
            tables.append(table)

        def run_onehot(cols: Cols) -> Cols:
            out: Cols = []
            for col, (index, nan_at), table in zip(cols, indexes, tables, strict=True):
                codes = _codes(col, index, nan_at)
                if unknown == "error" and (codes < 0).any():
                    raise Fallback("unknown category")
                out.extend(table[codes].T)  # a row of the table per value: one gather, no compare
            return out

        widths = [t.shape[1] for t in tables]  # one-hot columns per input, after `drop`
        slots = [(o, i) for i, (o, n) in enumerate(zip(origins, widths, strict=True)) for _ in range(n)]
        return Step(run_onehot, [None if o is None else Origin(o.column, None, cats[i]) for o, i in slots])

    missing = dict(step._missing_indices)

    def run_ordinal(cols: Cols) -> Cols:
        out: Cols = []
        for i, (col, (index, nan_at)) in enumerate(zip(cols, indexes, strict=True)):
            codes = _codes(col, index, nan_at)
            bad = codes < 0
            if unknown == "error" and bad.any():
                raise Fallback("unknown category")
            values = np.where(bad, 0, codes).astype(dtype)
            if i in missing:
                values[codes == missing[i]] = step.encoded_missing_value
            if unknown == "use_encoded_value":
                values[bad] = step.unknown_value
            out.append(values)
        return out

    return Step(
        run_ordinal,
        [None if o is None else Origin(o.column, None, cats[i]) for i, o in enumerate(origins)],
    )


def _isnan(col: np.ndarray) -> np.ndarray:
    if col.dtype.kind == "f":
        nan: np.ndarray = np.isnan(col)
        return nan
    if col.dtype.kind == "O":
        return np.asarray(col != col, dtype=bool)  # NaN is the one value unequal to itself
    return np.zeros(len(col), dtype=bool)


def indicator(step: Any, origins: Origins) -> Step:
    """MissingIndicator with missing_values=NaN: a bool column per fitted feature."""
    if not (isinstance(step.missing_values, float) and math.isnan(step.missing_values)):
        raise Unsupported("MissingIndicator(missing_values other than NaN)")
    features = [int(f) for f in step.features_]
    watch = step.features == "missing-only" and step.error_on_new
    others = [j for j in range(len(origins)) if j not in set(features)]

    def run(cols: Cols) -> Cols:
        if watch and any(_isnan(cols[j]).any() for j in others):
            raise Fallback("a missing value in a column the indicator did not fit")
        return [_isnan(cols[j]) for j in features]

    return Step(run, [None for _ in features])


def imputer(step: Any, origins: Origins) -> Step:
    """SimpleImputer with missing_values=NaN: fill each column's NaN with its statistic."""
    if not (isinstance(step.missing_values, float) and math.isnan(step.missing_values)):
        raise Unsupported("SimpleImputer(missing_values other than NaN)")
    stats = np.asarray(step.statistics_)
    if stats.dtype.kind == "f" and np.isnan(stats).any() and not step.keep_empty_features:
        raise Unsupported("SimpleImputer with a feature it saw no value of")
    numeric = step.strategy in ("mean", "median")
    marks = indicator(step.indicator_, origins) if step.add_indicator else None

    def run(cols: Cols) -> Cols:
        if numeric or any(c.dtype.kind != "O" for c in cols):
            X = stack(cols, float_dtype(cols))
        else:
            X = stack(cols, np.dtype(object))
        mask = _isnan(X.ravel()).reshape(X.shape)
        if mask.any():
            rows, js = np.nonzero(mask)
            X[rows, js] = stats[js]
        out = list(X.T)
        return out + marks.run(cols) if marks is not None else out

    extra = marks.origins if marks is not None else []
    return Step(run, list(origins) + extra)
