"""From an MLflow model to its input contract: the signature's columns, the fitted encoders'
categories, and the input example, read once at load."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from model_api.contract import InputSchema
from model_api.dtypes import relaxed_schema
from model_api.errors import ModelLoadError
from model_api.features import Feature, Kind
from model_api.inputs import ModelSpec
from model_api.registry import FLAVORS, LoadedModel

_NUMPY_KIND = {"f": Kind.DOUBLE, "i": Kind.LONG, "u": Kind.LONG, "b": Kind.BOOLEAN}
_MLFLOW_KIND = {
    "double": Kind.DOUBLE,
    "float": Kind.FLOAT,
    "long": Kind.LONG,
    "integer": Kind.INTEGER,
    "boolean": Kind.BOOLEAN,
    "string": Kind.STRING,
}


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


def _contract_fits(inputs: Any) -> bool:
    """Whether our contract states exactly what MLflow enforces: named scalar columns, none of
    them an optional integer or boolean (MLflow's handling of their missing values differs)."""
    if inputs is None or inputs.is_tensor_spec() or not inputs.has_input_names():
        return False
    for spec in inputs.inputs:
        kind = _MLFLOW_KIND.get(str(getattr(getattr(spec, "type", None), "name", "")).lower())
        if kind is None:
            return False
        if not getattr(spec, "required", True) and kind not in (Kind.DOUBLE, Kind.FLOAT, Kind.STRING):
            return False
    return True


def model_spec(loaded: LoadedModel) -> ModelSpec:
    """What requests are parsed against, and which path the model takes: the contract path for a
    scikit-learn model predicting with `predict` from scalar columns and taking no params; the
    pyfunc path (MLflow's own parsing and enforcement) for everything else."""
    signature = loaded.signature
    inputs = getattr(signature, "inputs", None)
    params = getattr(signature, "params", None)
    contract = None
    if (
        loaded.flavor == "sklearn"
        and loaded.predict_fn == "predict"
        and params is None
        and _contract_fits(inputs)
    ):
        contract = build_input_schema(loaded.model, signature, loaded.input_example)
    return ModelSpec(
        contract,
        inputs,
        params,
        loaded.metadata,
        tabular=loaded.flavor in FLAVORS,
        relaxed_schema=relaxed_schema(inputs),
    )
