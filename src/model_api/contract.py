"""The model's input contract: its columns, and the check of a request's rows against them.

The contract is derived once at load (`signature.py`), so a request is checked with plain Python
loops over its columns and turned into one DataFrame or array per model call. Every protocol
parses its own envelope and hands the rows over in the form it received them: records keyed by
feature name, rows in signature order, or columns (V2 tensors).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from model_api.errors import ErrorDetail, InvalidInput, TooManyRows

MAX_DETAILS = 10


class Kind(StrEnum):
    """A feature's type, as MLflow's signature names it."""

    DOUBLE = "double"
    FLOAT = "float"
    LONG = "long"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"


INT_RANGE = {Kind.LONG: (-(2**63), 2**63 - 1), Kind.INTEGER: (-(2**31), 2**31 - 1)}
NUMBER_LIMIT = float(np.finfo(np.float32).max)
"""Largest magnitude a float feature may have, even a double one: scikit-learn's trees (and many
other estimators) compute in float32, where anything larger is infinity and the model raises."""
_EXACT_FLOAT_INT = 2**53
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:\- ]{1,64}")


def _unknown_parts(what: str, name: Any, row: int | None = None) -> tuple[str, int | None, str | None]:
    """An unknown name is repeated back only when it is a plain name: never arbitrary client text."""
    if isinstance(name, str) and _PLAIN_NAME.fullmatch(name):
        return what, row, name
    return f"{what}; its name is not repeated (not a plain name of at most 64 characters)", row, None


def unknown_detail(what: str, name: Any) -> ErrorDetail:
    """A fault about an unknown name, repeating the name only when it is a plain one."""
    message, row, field = _unknown_parts(what, name)
    return ErrorDetail(message, row=row, field=field)


_OUT_OF_RANGE = "must be a finite number within ±3.4e38 (no NaN or infinity)"
_DTYPE = {
    Kind.DOUBLE: np.float64,
    Kind.FLOAT: np.float32,
    Kind.LONG: np.int64,
    Kind.INTEGER: np.int32,
    Kind.BOOLEAN: np.bool_,
    Kind.STRING: object,
}


@dataclass(frozen=True)
class Feature:
    """One input column of the model."""

    name: str
    kind: Kind
    required: bool = True
    categories: tuple[Any, ...] | None = None
    """The values the model knows, when it encodes this column (one-hot or ordinal)."""
    accepts_unknown: bool = True
    """Whether the model copes with a category it has not seen (handle_unknown != 'error')."""

    @functools.cached_property
    def allowed(self) -> frozenset[Any] | None:
        """The only values the column takes (the model refuses a category it does not know), or
        None when any string goes; built once, used by every check of the column."""
        if self.categories is None or self.accepts_unknown:
            return None
        return frozenset(self.categories)

    @property
    def dtype(self) -> Any:
        if not self.required and self.kind in (Kind.LONG, Kind.INTEGER, Kind.BOOLEAN):
            return np.float64 if self.kind is not Kind.BOOLEAN else object
        return _DTYPE[self.kind]


@dataclass
class Batch:
    """Validated rows, held as one list per feature column (concatenable without copying rows)."""

    columns: dict[str, list[Any]]
    n_rows: int

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        if len(batches) == 1:
            return batches[0]
        names = batches[0].columns.keys()
        columns: dict[str, list[Any]] = {}
        for name in names:
            merged: list[Any] = []
            for b in batches:
                merged.extend(b.columns[name])
            columns[name] = merged
        return cls(columns, sum(b.n_rows for b in batches))


class _Errors:
    """Collects request faults; stops the scan once enough are known to be useful."""

    def __init__(self) -> None:
        self.items: list[ErrorDetail] = []
        self.count = 0

    def add(self, message: str, row: int | None = None, field: str | None = None) -> None:
        self.count += 1
        if len(self.items) < MAX_DETAILS:
            self.items.append(ErrorDetail(message, row, field))

    @property
    def full(self) -> bool:
        return self.count >= MAX_DETAILS

    def raise_if_any(self) -> None:
        if self.full:  # the scan stopped here: there may be more
            raise InvalidInput(
                f"the request has invalid values; the first {MAX_DETAILS} are listed", self.items
            )
        if self.count:
            raise InvalidInput(f"{self.count} invalid value(s) in the request", self.items)


BULK_MIN_ROWS = 16
"""From this many values a column is first checked in bulk (a few C-level passes over the list,
about 3 us for 64 values against 10 us one value at a time, measured); a column that fails the bulk
check is checked value by value, which finds and describes what is wrong."""
_NUMBERS = frozenset({float, int})
_BULK_NUMBER_LIMIT = NUMBER_LIMIT / 2  # below it, a float64 conversion cannot carry a value across the limit


def _valid_in_bulk(feature: Feature, values: list[Any]) -> bool:
    """Whether every value is already what the model wants (right type, in range, no null to
    replace): then the per-value check would change nothing and report nothing."""
    types = set(map(type, values))
    kind = feature.kind
    try:
        if kind in (Kind.DOUBLE, Kind.FLOAT):
            if not types <= _NUMBERS:
                return False
            magnitude = np.abs(np.array(values, dtype=np.float64))
            return bool(magnitude.max() < _BULK_NUMBER_LIMIT)  # NaN fails this too
        if kind in (Kind.LONG, Kind.INTEGER):
            if types != {int}:
                return False
            low, high = INT_RANGE[kind]
            return bool(low <= min(values) and max(values) <= high)
    except (OverflowError, ValueError):  # an integer too large for a float64
        return False
    if kind is Kind.BOOLEAN:
        return types == {bool}
    if types != {str}:
        return False
    return feature.allowed is None or feature.allowed.issuperset(values)


def _check_column(feature: Feature, values: list[Any], errors: _Errors) -> list[Any]:
    """Check one column's values against its feature; returns the values as the model wants them."""
    if len(values) >= BULK_MIN_ROWS and _valid_in_bulk(feature, values):
        return values
    kind = feature.kind
    name = feature.name
    nullable = not feature.required
    if kind in (Kind.DOUBLE, Kind.FLOAT):
        for i, v in enumerate(values):
            t = type(v)
            if t is float or t is int:
                if not -NUMBER_LIMIT <= v <= NUMBER_LIMIT:  # NaN fails this too
                    errors.add(_OUT_OF_RANGE, i, name)
            elif v is None and nullable:
                values[i] = math.nan
            else:
                errors.add("expected a number", i, name)
            if errors.full:
                break
    elif kind in (Kind.LONG, Kind.INTEGER):
        low, high = INT_RANGE[kind]
        # An integral float is taken as the integer only where floats are exact: beyond 2**53 (an
        # out-of-range integer literal is parsed as a float) it may not be the integer that was sent.
        flow, fhigh = max(low, -_EXACT_FLOAT_INT), min(high, _EXACT_FLOAT_INT)
        for i, v in enumerate(values):
            t = type(v)
            if t is int:
                if not low <= v <= high:
                    errors.add(f"integer out of range for {kind.value}", i, name)
            elif t is float and v.is_integer() and flow <= v <= fhigh:
                values[i] = int(v)
            elif v is None and nullable:
                values[i] = math.nan
            else:
                errors.add("expected an integer", i, name)
            if errors.full:
                break
    elif kind is Kind.BOOLEAN:
        for i, v in enumerate(values):
            if type(v) is not bool and not (v is None and nullable):
                errors.add("expected true or false", i, name)
                if errors.full:
                    break
    else:
        allowed = feature.allowed
        for i, v in enumerate(values):
            if type(v) is str:
                if allowed is not None and v not in allowed:
                    shown = ", ".join(map(str, feature.categories or ()))
                    errors.add(f"unknown category; the model knows: {shown}", i, name)
            elif v is None and nullable:
                # pandas' missing value, whatever the other rows hold: a None would read as one
                # more category to an encoder (inputs.py, "One difference from MLflow").
                values[i] = math.nan
            else:
                errors.add("expected a string", i, name)
            if errors.full:
                break
    return values


@dataclass(frozen=True)
class InputSchema:
    """The columns a model takes, in signature order, and how to check and convert them."""

    features: tuple[Feature, ...]
    tensor: bool = False
    """The model takes a 2-D array rather than a named DataFrame."""
    example: tuple[dict[str, Any], ...] = ()
    names: tuple[str, ...] = field(init=False)
    _keys: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(f.name for f in self.features))
        object.__setattr__(self, "_keys", frozenset(self.names))

    # -- parsing ------------------------------------------------------------------------------

    def _check_list(self, rows: Any, max_rows: int, where: str) -> list[Any]:
        if not isinstance(rows, list):
            raise InvalidInput(
                f"'{where}' must be a list of rows", [ErrorDetail("expected a list", field=where)]
            )
        if not rows:
            raise InvalidInput(
                f"'{where}' is empty; send at least one row", [ErrorDetail("empty", field=where)]
            )
        if len(rows) > max_rows:
            raise TooManyRows(f"{len(rows)} rows in one request; at most {max_rows} are allowed")
        return rows

    def parse_records(self, rows: Any, max_rows: int, where: str = "instances") -> Batch:
        """Validate records keyed by feature name."""
        rows = self._check_list(rows, max_rows, where)
        keys = self._keys
        if all(type(row) is dict and row.keys() == keys for row in rows):  # every row complete
            columns = {name: [row[name] for row in rows] for name in self.names}
            return self._check_columns(columns, len(rows))
        errors = _Errors()
        columns = {name: [] for name in self.names}
        appenders = [(name, columns[name].append) for name in self.names]
        for i, row in enumerate(rows):
            if type(row) is not dict:
                errors.add("expected an object keyed by feature name", i)
            elif row.keys() != keys:
                before = errors.count
                for feature in self.features:
                    if feature.required and feature.name not in row:
                        errors.add("missing feature", i, feature.name)
                for name in row:
                    if name not in keys:
                        errors.add(*_unknown_parts("unknown feature", name, i))
                if errors.count == before:  # only optional features are absent
                    for name, append in appenders:
                        append(row.get(name))
                    continue
            else:
                for name, append in appenders:
                    append(row[name])
                continue
            if errors.full:
                break
        errors.raise_if_any()
        return self._check_columns(columns, len(rows))

    def parse_rows(self, rows: Any, max_rows: int, where: str = "features") -> Batch:
        """Validate rows given in signature order."""
        rows = self._check_list(rows, max_rows, where)
        errors = _Errors()
        width = len(self.names)
        for i, row in enumerate(rows):
            if type(row) is not list:
                errors.add(f"expected a list of {width} values in signature order", i)
            elif len(row) != width:
                errors.add(
                    f"expected {width} values in signature order ({', '.join(self.names)}), got {len(row)}", i
                )
            if errors.full:
                break
        errors.raise_if_any()
        columns = {name: [row[j] for row in rows] for j, name in enumerate(self.names)}
        return self._check_columns(columns, len(rows))

    def parse_columns(self, columns: dict[str, list[Any]], n_rows: int, max_rows: int) -> Batch:
        """Validate whole columns keyed by feature name, each of `n_rows` values (V2 tensors); an
        absent optional feature is a column of nulls."""
        if n_rows > max_rows:
            raise TooManyRows(f"{n_rows} rows in one request; at most {max_rows} are allowed")
        errors = _Errors()
        for feature in self.features:
            if feature.name not in columns and feature.required:
                errors.add("missing input", field=feature.name)
        for name in columns:
            if name not in self._keys:
                errors.add(*_unknown_parts("unknown input", name))
        errors.raise_if_any()
        own = {f.name: list(columns.get(f.name) or [None] * n_rows) for f in self.features}
        return self._check_columns(own, n_rows)

    def _check_columns(self, columns: dict[str, list[Any]], n_rows: int) -> Batch:
        errors = _Errors()
        for feature in self.features:
            columns[feature.name] = _check_column(feature, columns[feature.name], errors)
            if errors.full:
                break
        if errors.count:
            errors.items.sort(key=lambda d: d.row if d.row is not None else -1)
        errors.raise_if_any()
        return Batch(columns, n_rows)

    # -- compatibility ------------------------------------------------------------------------

    def breaks_clients_of(self, old: InputSchema) -> list[str]:
        """What a request valid for `old` could fail on under this schema; empty when none.

        Rows in signature order need the same columns in the same order; records need no new
        required column; every old value must still be accepted (same type or a widening
        integer to float; no category the old model took that this one refuses).
        """
        if self.names != old.names:
            return [f"the columns changed from ({', '.join(old.names)}) to ({', '.join(self.names)})"]
        problems = []
        for new_f, old_f in zip(self.features, old.features, strict=True):
            widening = old_f.kind in (Kind.LONG, Kind.INTEGER) and new_f.kind in (Kind.DOUBLE, Kind.FLOAT)
            if new_f.kind is not old_f.kind and not widening:
                problems.append(f"{new_f.name}: type {old_f.kind.value} became {new_f.kind.value}")
            if new_f.required and not old_f.required:
                problems.append(f"{new_f.name}: became required")
            if new_f.categories is not None and not new_f.accepts_unknown:
                if old_f.categories is None or old_f.accepts_unknown:
                    problems.append(f"{new_f.name}: now refuses categories the old model took")
                elif missing := set(old_f.categories) - set(new_f.categories):
                    problems.append(f"{new_f.name}: no longer knows {len(missing)} category(ies)")
        return problems

    # -- conversion ---------------------------------------------------------------------------

    def to_model_input(self, batch: Batch) -> pd.DataFrame | np.ndarray:
        """One DataFrame (or array) for the whole batch, with the signature's dtypes."""
        if self.tensor:
            dtype = np.result_type(*(f.dtype for f in self.features))
            return np.array([batch.columns[n] for n in self.names], dtype=dtype).T
        # Strings stay object columns, as scikit-learn saw them in training; pandas 3 would
        # otherwise infer its Arrow-backed string dtype, which the encoders convert back per call.
        return pd.DataFrame(
            {
                f.name: pd.Series(batch.columns[f.name], dtype=object)
                if f.kind is Kind.STRING
                else np.asarray(batch.columns[f.name], dtype=f.dtype)
                for f in self.features
            },
            copy=False,
        )

    def placeholder_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for f in self.features:
            if f.categories:
                row[f.name] = f.categories[0]
            elif f.kind is Kind.STRING:
                row[f.name] = ""
            elif f.kind is Kind.BOOLEAN:
                row[f.name] = False
            else:
                row[f.name] = 0
        return row
