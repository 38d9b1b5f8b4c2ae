"""Dtypes that JSON cannot carry, restored from the model itself.

A LightGBM model trained on a pandas `category` column remembers each such column's categories
(`Booster.pandas_categorical`) and refuses a frame whose column is not categorical ("train and
valid dataset categorical_feature do not match"), which every JSON body and CSV produce: MLflow's
scoring server then fails on valid input. Before such a model predicts, its categorical columns
get their training categories back, as the trainer's frame had them (a value the model never saw
becomes missing, as pandas does for any value outside a Categorical's categories).
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def lightgbm_categories(raw_model: Any) -> dict[str, list[Any]]:
    """The categories of a LightGBM model's categorical columns, by column name; empty when none
    (or when they cannot be told apart with certainty)."""
    booster = getattr(raw_model, "booster_", raw_model)
    pandas_categorical = getattr(booster, "pandas_categorical", None)
    dump = getattr(booster, "dump_model", None)
    if not pandas_categorical or dump is None:
        return {}
    infos = dump().get("feature_infos", {})
    names = [name for name in booster.feature_name() if infos.get(name, {}).get("values")]
    if len(names) != len(pandas_categorical):
        return {}
    return {name: list(cats) for name, cats in zip(names, pandas_categorical, strict=True)}


def restore_categories(data: Any, categories: dict[str, list[Any]]) -> Any:
    """`data` with its categorical columns as the model's categories (a DataFrame; else unchanged)."""
    if not categories or not isinstance(data, pd.DataFrame):
        return data
    restored = data.copy()
    for name, cats in categories.items():
        if name in restored.columns and not isinstance(restored[name].dtype, pd.CategoricalDtype):
            restored[name] = pd.Categorical(restored[name], categories=cats)
    return restored


_INTEGERS = ("long", "integer")


def relaxed_schema(schema: Any) -> Any:
    """The input schema with its optional integer columns as doubles, or None when it has none.

    MLflow cannot enforce an optional `long` or `integer` column that holds a missing value
    (pandas reads it as float64 NaN, and MLflow refuses to convert float64 to int64), so such a
    model refuses valid rows in every form. The trainer meant them: the rows as pandas reads them,
    missing value as NaN."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    from mlflow.types import ColSpec, DataType, Schema

    specs: list[Any] = []
    relaxed = False
    for spec in schema.inputs:
        type_name = str(getattr(spec.type, "name", "")).lower()
        if not spec.required and type_name in _INTEGERS:
            specs.append(ColSpec(DataType.double, spec.name, required=False))
            relaxed = True
        else:
            specs.append(spec)
    return Schema(specs) if relaxed else None


def optional_integers(schema: Any) -> list[str]:
    """The optional `long` and `integer` columns of an input schema (what `relaxed_schema` relaxes)."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return []
    return [
        s.name
        for s in schema.inputs
        if not s.required and str(getattr(s.type, "name", "")).lower() in _INTEGERS
    ]


def holds_missing(data: Any, names: list[str]) -> bool:
    """Whether a table holds a missing value in one of the columns `names`."""
    if not isinstance(data, pd.DataFrame):
        return False
    return any(name in data.columns and bool(data[name].isna().any()) for name in names)


def predict_relaxed(pyfunc: Any, data: Any, params: Any, schema: Any) -> Any:
    """What `pyfunc.predict(data, params)` does (mlflow.pyfunc.PyFuncModel.predict, MLflow 3.17),
    but enforcing `schema` (see `relaxed_schema`) instead of the model's own."""
    import inspect

    from mlflow.pyfunc import _validate_prediction_input

    data, params = _validate_prediction_input(
        data, params, schema, pyfunc.metadata.get_params_schema(), pyfunc.loader_module
    )
    params_arg = inspect.signature(pyfunc._predict_fn).parameters.get("params")
    if params_arg and params_arg.kind != inspect.Parameter.VAR_KEYWORD:
        return pyfunc._predict_fn(data, params=params)
    return pyfunc._predict_fn(data)
