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

from collections.abc import Sequence
from typing import Any

import numpy as np

from model_api.fastpath.base import (
    Cols,
    Fallback,
    Inverse,
    Origin,
    Origins,
    Step,
    Unsupported,
    float_dtype,
    stack,
)
from model_api.fastpath.encoders import encoder, imputer, indicator

__all__ = ["Fallback", "Origin", "Origins", "Step", "Unsupported", "compile_steps"]


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
        X = stack(cols, float_dtype(cols))
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
            compiled = encoder(step, current)
        elif kind == "SimpleImputer":
            compiled = imputer(step, current)
        elif kind == "MissingIndicator":
            compiled = indicator(step, current)
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
