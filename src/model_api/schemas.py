"""The model's input contract, derived once from its MLflow signature: validation and OpenAPI schema.

Everything the hot path needs (column order, dtypes, category sets) is computed here at load time,
so a request is checked with plain Python loops over its columns and turned into one DataFrame or
array per model call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from model_api.errors import ErrorDetail, InvalidInput, ModelLoadError, TooManyRows

MAX_DETAILS = 10


class Kind(StrEnum):
    """A feature's type, as MLflow's signature names it."""

    DOUBLE = "double"
    FLOAT = "float"
    LONG = "long"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"


_INT_RANGE = {Kind.LONG: (-(2**63), 2**63 - 1), Kind.INTEGER: (-(2**31), 2**31 - 1)}
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


def _unknown(what: str, name: Any) -> ErrorDetail:
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
_NUMPY_KIND = {"f": Kind.DOUBLE, "i": Kind.LONG, "u": Kind.LONG, "b": Kind.BOOLEAN}
_MLFLOW_KIND = {
    "double": Kind.DOUBLE,
    "float": Kind.FLOAT,
    "long": Kind.LONG,
    "integer": Kind.INTEGER,
    "boolean": Kind.BOOLEAN,
    "string": Kind.STRING,
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

    @property
    def dtype(self) -> Any:
        if not self.required and self.kind in (Kind.LONG, Kind.INTEGER, Kind.BOOLEAN):
            return np.float64 if self.kind is not Kind.BOOLEAN else object
        return _DTYPE[self.kind]

    def json_schema(self) -> dict[str, Any]:
        """This feature's JSON schema (OpenAPI 3.1)."""
        schema: dict[str, Any]
        if self.kind in (Kind.DOUBLE, Kind.FLOAT):
            schema = {"type": "number", "minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT}
        elif self.kind in (Kind.LONG, Kind.INTEGER):
            low, high = _INT_RANGE[self.kind]
            schema = {"type": "integer", "format": "int64" if self.kind is Kind.LONG else "int32"}
            schema |= {"minimum": low, "maximum": high}
        elif self.kind is Kind.BOOLEAN:
            schema = {"type": "boolean"}
        else:
            schema = {"type": "string"}
        if self.categories is not None:
            key = "examples" if self.accepts_unknown else "enum"
            schema[key] = list(self.categories)
        if not self.required:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema


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


@dataclass(frozen=True)
class PredictRequest:
    """A validated /predict body."""

    batch: Batch
    return_probabilities: bool


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


def _check_column(feature: Feature, values: list[Any], errors: _Errors) -> list[Any]:
    """Check one column's values against its feature; returns the values as the model wants them."""
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
        low, high = _INT_RANGE[kind]
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
        allowed = None
        if feature.categories is not None and not feature.accepts_unknown:
            allowed = frozenset(feature.categories)
        for i, v in enumerate(values):
            if type(v) is str:
                if allowed is not None and v not in allowed:
                    shown = ", ".join(map(str, feature.categories or ()))
                    errors.add(f"unknown category; the model knows: {shown}", i, name)
            elif not (v is None and nullable):
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

    def parse_predict(self, payload: Any, max_rows: int) -> PredictRequest:
        """Validate a /predict body: {"instances": [{...}]} or {"features": [[...]]}."""
        if not isinstance(payload, dict):
            raise InvalidInput("the body must be a JSON object with 'instances' or 'features'")
        unknown = sorted(k for k in payload if k not in ("instances", "features", "return_probabilities"))
        if unknown:
            raise InvalidInput(
                "unknown top-level field(s); use 'instances' or 'features' and 'return_probabilities'",
                [_unknown("unknown field", k) for k in unknown[:MAX_DETAILS]],
            )
        proba = payload.get("return_probabilities", False)
        if type(proba) is not bool:
            raise InvalidInput(
                "'return_probabilities' must be true or false",
                [ErrorDetail("expected true or false", field="return_probabilities")],
            )
        if ("instances" in payload) == ("features" in payload):
            raise InvalidInput("send exactly one of 'instances' (records) or 'features' (rows)")
        if "instances" in payload:
            batch = self.parse_records(payload["instances"], max_rows, "instances")
        else:
            batch = self.parse_rows(payload["features"], max_rows, "features")
        return PredictRequest(batch, proba)

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
        errors = _Errors()
        keys = self._keys
        columns: dict[str, list[Any]] = {name: [] for name in self.names}
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

    # -- documentation ------------------------------------------------------------------------

    def json_schemas(self, max_rows: int) -> dict[str, dict[str, Any]]:
        """Component schemas for the OpenAPI document: an instance, and the /predict request."""
        instance = {
            "type": "object",
            "title": "Instance",
            "description": "One row, keyed by the model's feature names.",
            "properties": {f.name: f.json_schema() for f in self.features},
            "required": [f.name for f in self.features if f.required],
            "additionalProperties": False,
        }
        row = {
            "type": "array",
            "description": "One row, values in signature order: " + ", ".join(self.names),
            "prefixItems": [f.json_schema() for f in self.features],
            "items": False,
            "minItems": len(self.features),
            "maxItems": len(self.features),
        }
        rows = {"minItems": 1, "maxItems": max_rows}
        request = {
            "type": "object",
            "title": "PredictRequest",
            "description": "Rows as records ('instances') or in signature order ('features').",
            "properties": {
                "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}} | rows,
                "features": {"type": "array", "items": row} | rows,
                "return_probabilities": {"type": "boolean", "default": False},
            },
            "oneOf": [{"required": ["instances"]}, {"required": ["features"]}],
            "additionalProperties": False,
        }
        return {"Instance": instance, "PredictRequest": request}

    def examples(self) -> dict[str, Any]:
        """Swagger examples built from the model's own input example."""
        records = [dict(r) for r in self.example] or [self._placeholder_row()]
        return {
            "instances": {
                "summary": "Records keyed by feature name (the model's input example)",
                "value": {"instances": records, "return_probabilities": True},
            },
            "features": {
                "summary": "Rows in signature order",
                "value": {"features": [[r.get(n) for n in self.names] for r in records]},
            },
        }

    def _placeholder_row(self) -> dict[str, Any]:
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


# -- building the schema from a model -------------------------------------------------------------


def _to_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _encoder_categories(estimator: Any, names: Sequence[str]) -> dict[str, tuple[tuple[Any, ...], bool]]:
    """Category sets of the one-hot/ordinal encoders inside a (nested) pipeline, by column name."""
    found: dict[str, tuple[tuple[Any, ...], bool]] = {}

    def encoder_in(obj: Any) -> Any:
        if hasattr(obj, "categories_") and hasattr(obj, "handle_unknown"):
            return obj
        for _, step in getattr(obj, "steps", []) or []:
            if (enc := encoder_in(step)) is not None:
                return enc
        return None

    def visit(obj: Any) -> None:
        for _, step in getattr(obj, "steps", []) or []:
            visit(step)
        for _, transformer, columns in getattr(obj, "transformers_", []) or []:
            enc = encoder_in(transformer)
            if enc is None or isinstance(columns, (str, slice)) or callable(columns):
                continue
            cols = [
                names[int(c)] if isinstance(c, (int, np.integer)) and c < len(names) else c for c in columns
            ]
            for col, cats in zip(cols, enc.categories_, strict=False):
                values = tuple(_to_python(v) for v in cats if not (isinstance(v, float) and math.isnan(v)))
                found[str(col)] = (values, enc.handle_unknown != "error")

    visit(estimator)
    return found


def _example_rows(example: pd.DataFrame | None, names: Iterable[str]) -> tuple[dict[str, Any], ...]:
    if example is None or example.empty:
        return ()
    names = list(names)
    if list(example.columns) != names and set(names) <= {str(c) for c in example.columns}:
        example = example[names]
    elif len(example.columns) == len(names):
        example = example.set_axis(names, axis=1)
    else:
        return ()
    rows = []
    for record in example.head(3).to_dict(orient="records"):
        rows.append(
            {
                str(k): (None if isinstance(v, float) and math.isnan(v) else _to_python(v))
                for k, v in record.items()
            }
        )
    return tuple(rows)


def build_input_schema(model: Any, signature: Any, input_example: pd.DataFrame | None) -> InputSchema:
    """Derive the input contract from the MLflow signature (or the estimator when there is none)."""
    features: list[Feature]
    tensor = False
    inputs = getattr(signature, "inputs", None)
    if inputs is not None and not inputs.is_tensor_spec() and inputs.has_input_names():
        features = []
        for spec in inputs.inputs:
            type_name = getattr(getattr(spec, "type", None), "name", str(getattr(spec, "type", "")))
            kind = _MLFLOW_KIND.get(str(type_name).lower())
            if kind is None:
                raise ModelLoadError(
                    f"feature {spec.name!r} has type {type_name!r}, which the service cannot validate; "
                    "serve models whose signature has scalar columns"
                )
            features.append(Feature(spec.name, kind, required=bool(getattr(spec, "required", True))))
    elif inputs is not None and inputs.is_tensor_spec():
        specs = inputs.inputs
        if len(specs) != 1 or len(specs[0].shape) != 2 or specs[0].shape[1] in (-1, None):
            raise ModelLoadError("a tensor signature must be one 2-D input of fixed width")
        width = int(specs[0].shape[1])
        kind = _NUMPY_KIND.get(np.dtype(specs[0].type).kind, Kind.DOUBLE)
        names = getattr(model, "feature_names_in_", None)
        labels = [str(n) for n in names] if names is not None else [f"x{i}" for i in range(width)]
        features = [Feature(n, kind) for n in labels]
        tensor = names is None
    elif hasattr(model, "n_features_in_"):
        names = getattr(model, "feature_names_in_", None)
        labels = (
            [str(n) for n in names]
            if names is not None
            else [f"x{i}" for i in range(int(model.n_features_in_))]
        )
        features = [Feature(n, Kind.DOUBLE) for n in labels]
        tensor = names is None
    else:
        raise ModelLoadError("the model has no signature; log it with one (mlflow.models.infer_signature)")

    categories = _encoder_categories(model, [f.name for f in features])
    features = [
        Feature(f.name, f.kind, f.required, *categories[f.name]) if f.name in categories else f
        for f in features
    ]
    return InputSchema(
        tuple(features), tensor=tensor, example=_example_rows(input_example, (f.name for f in features))
    )
