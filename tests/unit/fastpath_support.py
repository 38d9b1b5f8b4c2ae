"""Shared pieces of the fast-path tests: a synthetic table, the server's conversion, a recheck."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from model_api.contract import Batch, InputSchema
from model_api.fastpath import ColumnSpec, FastPath, build_fast_path
from model_api.fastpath.verify import UNKNOWN, compare
from model_api.features import Feature, Kind

SPECS = [
    ColumnSpec("income", "double"),
    ColumnSpec("visits", "long"),
    ColumnSpec("ratio", "float"),
    ColumnSpec("age", "integer"),
    ColumnSpec("member", "boolean"),
    ColumnSpec("plan", "string"),
    ColumnSpec("region", "string"),
]
NUMERIC = ["income", "visits", "ratio", "age", "member"]
CATEGORICAL = ["plan", "region"]
N_ROWS = 200_000


def converter(specs: Sequence[ColumnSpec]) -> Any:
    """The server's own conversion, `InputSchema.to_model_input`, for columns of `specs`."""
    schema = InputSchema(tuple(Feature(s.name, Kind(s.kind)) for s in specs))

    def to_frame(columns: Mapping[str, list[Any]]) -> Any:
        n_rows = len(next(iter(columns.values()))) if columns else 0
        return schema.to_model_input(Batch({k: list(v) for k, v in columns.items()}, n_rows))

    return to_frame


def table(n: int = 400, seed: int = 0, nan: bool = False) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A frame of SPECS' columns, a 3-class label and a regression target depending on them."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 0.6, n).round(2)
    visits = rng.poisson(6, n).astype(np.int64)
    ratio = rng.uniform(0, 1, n).astype(np.float32)
    age = rng.integers(18, 90, n).astype(np.int32)
    member = rng.random(n) < 0.4
    plan = rng.choice(["basic", "plus", "pro"], n)
    region = rng.choice(["north", "south", "east", "west"], n)
    score = np.log(income) / 3 + visits / 6 + ratio + (plan == "pro") - (region == "west") * 0.5 + member
    score += rng.normal(0, 0.4, n)
    if nan:
        income[rng.random(n) < 0.1] = np.nan
        ratio[rng.random(n) < 0.1] = np.nan
    frame = pd.DataFrame(
        {
            "income": income,
            "visits": visits,
            "ratio": ratio,
            "age": age,
            "member": member,
            "plan": pd.Series(plan, dtype=object),
            "region": pd.Series(region, dtype=object),
        }
    )
    label = np.digitize(score, np.quantile(score, [0.33, 0.66]))
    return frame, label, score


def demo_specs(frame: pd.DataFrame) -> list[ColumnSpec]:
    """The demo churn table's columns as its signature types them (integers long, numbers double)."""
    from model_api import demo

    kinds = {c: "long" if frame[c].dtype.kind == "i" else "double" for c in demo.NUMERIC}
    return [ColumnSpec(c, kinds.get(c, "string")) for c in frame.columns]


def build_demo(n_rows: int, n_trees: int, n_random: int) -> tuple[FastPath | None, str, Any, pd.DataFrame]:
    """The demo pipeline fitted on `n_rows` rows of its table and compiled: (fast, reason, model, frame)."""
    from model_api import demo

    frame, label = demo.make_churn_table(n_rows)
    model = demo.build_pipeline(n_trees=n_trees).fit(frame, label)
    specs = demo_specs(frame)
    fast, reason = build_fast_path(model, specs, converter(specs), n_random=n_random)
    return fast, reason, model, frame


def specs_for(frame: pd.DataFrame) -> list[ColumnSpec]:
    return [s for s in SPECS if s.name in frame.columns]


def build(model: Any, frame: pd.DataFrame, n_rows: int = N_ROWS) -> tuple[FastPath | None, str]:
    specs = specs_for(frame)
    return build_fast_path(model, specs, converter(specs), n_random=n_rows)


def recheck(fast: FastPath, model: Any, frame: pd.DataFrame, n: int = 5000, seed: int = 1) -> None:
    """The test's own comparison, on rows the build did not use: training rows, jittered."""
    specs = specs_for(frame)
    rng = np.random.default_rng(seed)
    picked = frame.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    columns: dict[str, list[Any]] = {}
    for s in specs:
        values = picked[s.name].to_numpy()
        if s.kind == "double":
            values = values * rng.choice([1.0, 1.0 + 1e-9, 0.5], n)
        columns[s.name] = [math.nan if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]
    frame_in = converter(specs)(columns)
    labels = np.asarray(model.predict(frame_in))
    proba = np.asarray(model.predict_proba(frame_in)) if fast.has_probabilities else None
    got = fast.predict(columns, n, fast.has_probabilities)
    assert compare((labels, proba), got) is None
    assert fast.fallbacks == 0


__all__ = ["CATEGORICAL", "NUMERIC", "SPECS", "UNKNOWN", "build", "converter", "recheck", "table"]
