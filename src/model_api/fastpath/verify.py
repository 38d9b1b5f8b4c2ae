"""The exactness check: rows built from the model's own split values, compared bit for bit.

Rows: every split threshold t of the trees, as the trees read it (float32(t) and one float32 step
either side for float32 readers; t and one float64 step either side too), mapped back through
the preprocessing to the request column where the chain is affine, then rounded as the column's
type would be (float32 columns: float32 and one step either side; integer columns: floor and
ceiling). Other rows are random: values spread over the thresholds' range, known categories,
unknown ones where the model accepts them, and NaN where the model accepts it (unknown categories
and NaN in about half of the rows, NaN in one column in ten of those; the rows that take the
threshold values and the other half have neither). A threshold set
larger than its share of the budget is sampled.

Equality: every label equal (and the same dtype), every probability bit equal (`.view` as
unsigned integers of the probabilities' own width), else the fast path is refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_api.fastpath.preprocess import Origins

UNKNOWN = "\x00fast-path-unknown"


@dataclass(frozen=True)
class Column:
    """A request column as verification fills it."""

    name: str
    kind: str
    nan_ok: bool
    unknown_ok: bool
    categories: tuple[Any, ...]


def _int_bounds(kind: str) -> tuple[int, int]:
    return (-(2**31), 2**31 - 1) if kind == "integer" else (-(2**53), 2**53)


LIMIT = float(np.finfo(np.float32).max)
"""The server refuses numbers beyond float32's range, and a tree split at infinity (sklearn's
split of missing from non-missing values) is covered by the NaN rows."""


def _edges(t: np.ndarray, float32: bool) -> np.ndarray:
    """Each threshold as the trees may read it, and one representable step either side."""
    t = t[np.abs(t) < LIMIT / 2]
    t32 = t.astype(np.float32)
    parts = [t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))]
    out = [p.astype(np.float64) for p in parts]
    if not float32:
        out += [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)]
    return np.unique(np.concatenate(out))


def _as_column(values: np.ndarray, kind: str) -> np.ndarray:
    """Raw values rounded the ways the column's type allows (float32, integers)."""
    values = values[np.abs(values) < LIMIT / 2]
    if kind in ("long", "integer"):
        low, high = _int_bounds(kind)
        both = np.concatenate([np.floor(values), np.ceil(values)])
        return np.unique(np.clip(both, low, high))
    if kind == "float":
        v32 = values[np.abs(values) < 3.0e38].astype(np.float32)
        steps = [v32, np.nextafter(v32, np.float32(-np.inf)), np.nextafter(v32, np.float32(np.inf))]
        return np.unique(np.concatenate(steps).astype(np.float64))
    if kind == "double":
        return np.unique(
            np.concatenate([values, np.nextafter(values, -np.inf), np.nextafter(values, np.inf)])
        )
    return np.zeros(0)


def threshold_values(
    thresholds: Mapping[int, np.ndarray], origins: Origins, columns: Sequence[Column], float32: bool
) -> dict[int, np.ndarray]:
    """Request-column values that land on or next to a split, by column position."""
    found: dict[int, list[np.ndarray]] = {}
    for feature, t in thresholds.items():
        origin = origins[feature] if feature < len(origins) else None
        if origin is None or origin.inverse is None:
            continue
        with np.errstate(all="ignore"):
            raw = origin.inverse(_edges(np.asarray(t, dtype=np.float64), float32))
        found.setdefault(origin.column, []).append(_as_column(raw, columns[origin.column].kind))
    return {c: np.unique(np.concatenate(v)) for c, v in found.items()}


def random_rows(
    columns: Sequence[Column],
    edges: Mapping[int, np.ndarray],
    n_rows: int,
    rng: np.random.Generator,
    clean_first: int = 0,
) -> dict[str, np.ndarray]:
    """n_rows random request rows, a numpy array per column (see the module docstring). NaN and
    unknown categories (which an encoder may turn into NaN) go in about half of the rows, never in
    the first `clean_first`: the other rows reach the trees without NaN, whatever the number of
    columns (the compiled walk has a walk for such batches, checked on those rows)."""
    out: dict[str, np.ndarray] = {}
    may_nan = rng.random(n_rows) < 0.5
    may_nan[:clean_first] = False
    for j, col in enumerate(columns):
        values: np.ndarray
        if col.kind == "string" or col.categories:
            pool = [c for c in col.categories if not (isinstance(c, float) and math.isnan(c))] or ["a", "b"]
            n_known = len(pool)
            if col.kind == "string" and col.unknown_ok:
                pool.append(UNKNOWN)
            choices = np.empty(len(pool), dtype=object)
            choices[:] = pool
            picked = rng.integers(0, len(pool), n_rows)
            picked = np.where(may_nan, picked, rng.integers(0, n_known, n_rows))
            values = choices[picked]
            if col.kind != "string":
                values = _as_kind(values.astype(np.float64), col.kind)
        elif col.kind == "boolean":
            values = rng.random(n_rows) < 0.5
        else:
            known = edges.get(j, np.zeros(0))
            lo, hi = (float(known.min()), float(known.max())) if len(known) else (-10.0, 10.0)
            span = max(hi - lo, 1.0)
            spread = rng.uniform(lo - 0.2 * span, hi + 0.2 * span, n_rows)
            if len(known):
                spread = np.where(rng.random(n_rows) < 0.3, rng.choice(known, n_rows), spread)
            values = _as_kind(spread, col.kind)
        if col.nan_ok:
            values = values.astype(object if values.dtype == object else np.float64)
            values[may_nan & (rng.random(n_rows) < 0.1)] = math.nan
        out[col.name] = values
    return out


def _as_kind(values: np.ndarray, kind: str) -> np.ndarray:
    if kind in ("long", "integer"):
        low, high = _int_bounds(kind)
        return np.clip(np.round(values), low, high).astype(np.int64)
    if kind == "float":
        return values.astype(np.float32).astype(np.float64)
    return values


def place_edges(
    rows: dict[str, np.ndarray], columns: Sequence[Column], edges: Mapping[int, np.ndarray]
) -> int:
    """Write the threshold values into consecutive rows, one column at a time; returns rows used."""
    at = 0
    n = len(next(iter(rows.values())))
    for j, values in edges.items():
        take = values[: n - at]
        rows[columns[j].name][at : at + len(take)] = take
        at += len(take)
    return at


def has_nan(rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """Which rows hold a NaN in some column."""
    n = len(next(iter(rows.values())))
    found = np.zeros(n, dtype=bool)
    for values in rows.values():
        if values.dtype.kind in "fO":
            found |= np.asarray(values != values, dtype=bool)  # NaN is the one value unequal to itself
    return found


def compare(
    expected: tuple[np.ndarray, np.ndarray | None], got: tuple[np.ndarray, np.ndarray | None]
) -> str | None:
    """None when labels and probabilities are identical to the bit, else what differs (no values)."""
    labels, proba = expected
    fast_labels, fast_proba = got
    if fast_labels.dtype != labels.dtype or fast_labels.shape != labels.shape:
        return (
            f"labels are {fast_labels.dtype} {fast_labels.shape}, the model's {labels.dtype} {labels.shape}"
        )
    if labels.dtype.kind == "f":
        wrong = int((labels.view(f"u{labels.itemsize}") != fast_labels.view(f"u{labels.itemsize}")).sum())
    else:
        wrong = int((labels != fast_labels).sum())
    if wrong:
        return f"{wrong} label(s) differ"
    if proba is None:
        return None
    if fast_proba is None or fast_proba.dtype != proba.dtype or fast_proba.shape != proba.shape:
        return "probabilities differ in dtype or shape"
    width = f"u{proba.itemsize}"
    wrong = int(
        (np.ascontiguousarray(proba).view(width) != np.ascontiguousarray(fast_proba).view(width)).sum()
    )
    return f"{wrong} probability value(s) differ in at least one bit" if wrong else None


Answer = Callable[[Any, bool], tuple[np.ndarray, np.ndarray | None]]


def model_answers(answer: Answer, frame: Any, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """What the model itself answers (its warnings silenced: they are about the rows, not us)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return answer(frame, probabilities)


def refuses(
    answer: Answer, to_frame: Callable[[dict[str, list[Any]]], Any], row: dict[str, list[Any]]
) -> bool:
    """Whether the model raises on this row (or the server's conversion cannot build it)."""
    try:
        model_answers(answer, to_frame(row), False)
    except (ValueError, TypeError, KeyError):
        return True
    return False
