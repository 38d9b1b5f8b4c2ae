"""scikit-learn preprocessing steps, re-done in numpy with scikit-learn's own arithmetic.

A compiled step maps a list of 1-D columns (n_rows each) to a list of 1-D columns. Each step
repeats the fitted transformer's operations in the same order and dtype as its `transform`
(sklearn 1.9, `preprocessing/_data.py`, `_encoders.py`, `impute/_base.py`,
`compose/_column_transformer.py`): StandardScaler `X -= mean_; X /= scale_` in the input's float
dtype (float32 only when every input column is float32, as `check_array` gives on a DataFrame),
MinMaxScaler `X *= scale_; X += min_`, and so on. Encoders look values up with Python equality,
as `_check_unknown` does on object columns.

Inputs the model would refuse (an unknown category under handle_unknown='error', a missing value
new to a MissingIndicator with error_on_new) raise `Fallback`: the caller hands the request to the
model, so the model raises its own error. A transformer outside the list raises `Unsupported`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Cols = list[np.ndarray]
Inverse = Callable[[np.ndarray], np.ndarray]


class Unsupported(Exception):
    """The model holds a step the fast path cannot reproduce exactly (the message says which)."""


class Fallback(Exception):
    """This request needs the model itself (it will raise the model's own error)."""


@dataclass(frozen=True)
class Origin:
    """Where an output column comes from: an input column, and how to map a value back to it."""

    column: int
    inverse: Inverse | None
    """Output value -> input value, when the column is an invertible (affine) image of the input."""
    categories: tuple[Any, ...] = ()
    """The categories an encoder knows for this input column (where an encoder made it)."""


Origins = list[Origin | None]


@dataclass(frozen=True)
class Step:
    """A compiled transformer: `run(columns) -> columns`, and each output column's origin."""

    run: Callable[[Cols], Cols]
    origins: Origins


def _float_dtype(cols: Cols) -> np.dtype[Any]:
    """The dtype `check_array(dtype=FLOAT_DTYPES)` gives these columns: float32 only if all are."""
    if cols and all(c.dtype == np.float32 for c in cols):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _stack(cols: Cols, dtype: np.dtype[Any]) -> np.ndarray:
    out = np.empty((len(cols[0]), len(cols)), dtype=dtype)
    for j, c in enumerate(cols):
        out[:, j] = c
    return out


def _affine(step: Any, origins: Origins) -> Step:
    """StandardScaler, RobustScaler, MinMaxScaler, MaxAbsScaler: the exact in-place sequence."""
    name = type(step).__name__
    ops: list[tuple[str, np.ndarray]] = []
    if name == "StandardScaler":
        if step.with_mean:
            ops.append(("sub_as", np.asarray(step.mean_)))
        if step.with_std:
            ops.append(("div_as", np.asarray(step.scale_)))
    elif name == "RobustScaler":
        if step.with_centering:
            ops.append(("sub", np.asarray(step.center_)))
        if step.with_scaling:
            ops.append(("div", np.asarray(step.scale_)))
    elif name == "MinMaxScaler":
        if step.clip:
            raise Unsupported("MinMaxScaler(clip=True)")
        ops += [("mul", np.asarray(step.scale_)), ("add", np.asarray(step.min_))]
    elif name == "MaxAbsScaler":
        if getattr(step, "clip", False):
            raise Unsupported("MaxAbsScaler(clip=True)")
        ops.append(("div", np.asarray(step.scale_)))

    def run(cols: Cols) -> Cols:
        X = _stack(cols, _float_dtype(cols))
        for op, p in ops:
            if op == "sub_as":
                X -= p.astype(X.dtype)
            elif op == "div_as":
                X /= p.astype(X.dtype)
            elif op == "sub":
                X -= p
            elif op == "div":
                X /= p
            elif op == "mul":
                X *= p
            else:
                X += p
        return list(X.T)

    def inverse_of(j: int, prior: Inverse | None) -> Inverse:
        def inv(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v, dtype=np.float64)
            for op, p in reversed(ops):
                undo = {"sub_as": np.add, "sub": np.add, "div_as": np.multiply, "div": np.multiply}
                v = undo.get(op, np.divide if op == "mul" else np.subtract)(v, p[j])
            return prior(v) if prior is not None else v

        return inv

    out: Origins = [
        None if o is None else Origin(o.column, inverse_of(j, o.inverse)) for j, o in enumerate(origins)
    ]
    return Step(run, out)


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
    """Positions of the column's values in the categories; -1 where unknown."""
    get = index.get
    out = [nan_at if v != v else get(v, -1) for v in col.tolist()]
    return np.array([-1 if c is None else c for c in out], dtype=np.int64)


def _encoder(step: Any, origins: Origins) -> Step:
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
        blocks: list[list[int]] = []  # per input: output slot -> category position
        for i, fitted in enumerate(step.categories_):
            drop = None if drops is None else drops[i]
            blocks.append([k for k in range(len(fitted)) if drop is None or k != drop])

        def run_onehot(cols: Cols) -> Cols:
            out: Cols = []
            for col, (index, nan_at), keep in zip(cols, indexes, blocks, strict=True):
                codes = _codes(col, index, nan_at)
                if unknown == "error" and (codes < 0).any():
                    raise Fallback("unknown category")
                out.extend((codes == k).astype(dtype) for k in keep)
            return out

        slots = [(o, i) for i, (o, keep) in enumerate(zip(origins, blocks, strict=True)) for _ in keep]
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
        return np.isnan(col)
    if col.dtype.kind == "O":
        return np.asarray(col != col, dtype=bool)
    return np.zeros(len(col), dtype=bool)


def _indicator(step: Any, origins: Origins) -> Step:
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


def _imputer(step: Any, origins: Origins) -> Step:
    """SimpleImputer with missing_values=NaN: fill each column's NaN with its statistic."""
    if not (isinstance(step.missing_values, float) and math.isnan(step.missing_values)):
        raise Unsupported("SimpleImputer(missing_values other than NaN)")
    stats = np.asarray(step.statistics_)
    if stats.dtype.kind == "f" and np.isnan(stats).any() and not step.keep_empty_features:
        raise Unsupported("SimpleImputer with a feature it saw no value of")
    numeric = step.strategy in ("mean", "median")
    indicator = _indicator(step.indicator_, origins) if step.add_indicator else None

    def run(cols: Cols) -> Cols:
        if numeric or any(c.dtype.kind != "O" for c in cols):
            X = _stack(cols, _float_dtype(cols))
        else:
            X = _stack(cols, np.dtype(object))
        mask = _isnan(X.ravel()).reshape(X.shape)
        if mask.any():
            rows, js = np.nonzero(mask)
            X[rows, js] = stats[js]
        out = list(X.T)
        return out + indicator.run(cols) if indicator is not None else out

    extra = indicator.origins if indicator is not None else []
    return Step(run, list(origins) + extra)


def _select(spec: Any, names: Sequence[str] | None, width: int) -> list[int]:
    """A ColumnTransformer's fitted column selection, as input positions."""
    if isinstance(spec, slice):
        return list(range(width))[spec]
    items = [spec] if isinstance(spec, (str, int, np.integer)) else list(spec)
    if items and all(isinstance(i, (bool, np.bool_)) for i in items):
        return [j for j, keep in enumerate(items) if keep]
    positions = []
    for item in items:
        if isinstance(item, str):
            if names is None or item not in names:
                raise Unsupported(f"column {item!r} is not an input column")
            positions.append(list(names).index(item))
        elif isinstance(item, (int, np.integer)):
            positions.append(int(item))
        else:
            raise Unsupported("a column selection by something other than names or positions")
    return positions


def _column_transformer(step: Any, origins: Origins, names: Sequence[str] | None) -> Step:
    parts: list[tuple[list[int], Step | None]] = []
    for _name, transformer, spec in step.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        picks = _select(spec, names, len(origins))
        if not picks:
            continue
        sub = [origins[j] for j in picks]
        sub_names = [names[j] for j in picks] if names is not None else None
        inner = None if _identity(transformer) else compile_steps([transformer], sub, sub_names)
        parts.append((picks, inner))

    def run(cols: Cols) -> Cols:
        out: Cols = []
        for picks, inner in parts:
            sub = [cols[j] for j in picks]
            out.extend(sub if inner is None else inner.run(sub))
        return out

    out_origins: Origins = []
    for picks, inner in parts:
        out_origins.extend([origins[j] for j in picks] if inner is None else inner.origins)
    return Step(run, out_origins)


def _unify(cols: Cols) -> Cols:
    """A transformer's output is one array (`np.hstack` of its parts): one dtype for all columns."""
    kinds = {c.dtype for c in cols}
    if len(kinds) < 2 or np.dtype(object) in kinds:
        return cols
    common = np.result_type(*kinds)
    return [c.astype(common, copy=False) for c in cols]


def _identity(step: Any) -> bool:
    """'passthrough', None, or a FunctionTransformer without a function (what ColumnTransformer's
    remainder='passthrough' becomes once fitted)."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    return type(step).__name__ == "FunctionTransformer" and step.func is None and not step.validate


def compile_steps(steps: Sequence[Any], origins: Origins, names: Sequence[str] | None) -> Step:
    """Chain fitted transformers (or nested Pipelines) into one Step; raises Unsupported."""
    chain: list[Step] = []
    current = list(origins)
    for step in steps:
        kind = type(step).__name__
        if _identity(step):
            continue
        if kind == "Pipeline":
            compiled = compile_steps([s for _, s in step.steps], current, names)
        elif kind == "ColumnTransformer":
            compiled = _column_transformer(step, current, names)
        elif kind in ("StandardScaler", "RobustScaler", "MinMaxScaler", "MaxAbsScaler"):
            compiled = _affine(step, current)
        elif kind in ("OneHotEncoder", "OrdinalEncoder"):
            compiled = _encoder(step, current)
        elif kind == "SimpleImputer":
            compiled = _imputer(step, current)
        elif kind == "MissingIndicator":
            compiled = _indicator(step, current)
        else:
            raise Unsupported(f"a {kind} step")
        chain.append(compiled)
        current = compiled.origins
        names = None  # after the first step, columns are positions

    def run(cols: Cols) -> Cols:
        for s in chain:
            cols = _unify(s.run(cols))
        return cols

    return Step(run, current)
