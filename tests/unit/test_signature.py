"""The MLflow signature (with the fitted encoders and the input example) -> the input contract."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from model_api.api.openapi import feature_schema
from model_api.contract import InputSchema
from model_api.features import Kind
from model_api.registry import LoadedModel
from model_api.signature import build_input_schema


@pytest.fixture(scope="module")
def schema(champion: LoadedModel) -> InputSchema:
    return build_input_schema(champion.model, champion.signature, champion.input_example)


def test_schema_follows_the_signature_order_and_types(schema: InputSchema) -> None:
    assert schema.names[:2] == ("tenure_months", "monthly_charges")
    kinds = {f.name: f.kind for f in schema.features}
    assert kinds["tenure_months"] is Kind.LONG
    assert kinds["monthly_charges"] is Kind.DOUBLE
    assert kinds["contract"] is Kind.STRING
    assert not schema.tensor


def test_categories_come_from_the_fitted_encoder(schema: InputSchema) -> None:
    contract = next(f for f in schema.features if f.name == "contract")
    assert contract.categories == ("month-to-month", "one-year", "two-year")
    assert contract.accepts_unknown is False


def test_example_rows_are_the_models_input_example(schema: InputSchema, champion: LoadedModel) -> None:
    assert champion.input_example is not None
    assert len(schema.example) == len(champion.input_example)
    assert schema.example[0]["tenure_months"] == int(champion.input_example.iloc[0]["tenure_months"])


def fit_small(handle_unknown: str) -> tuple[Any, Any, pd.DataFrame]:
    frame = pd.DataFrame({"plan": ["a", "b", "a", "b"] * 10, "usage": np.arange(40, dtype=float)})
    label = np.array([0, 1] * 20)
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [("cat", OneHotEncoder(handle_unknown=handle_unknown), ["plan"])], remainder="passthrough"
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, label)
    return model, infer_signature(frame, label), frame.head(2)


def test_unknown_category_is_accepted_when_the_model_ignores_unknowns() -> None:
    model, signature, example = fit_small("ignore")
    schema = build_input_schema(model, signature, example)
    plan = schema.features[0]
    assert plan.categories == ("a", "b") and plan.accepts_unknown
    batch = schema.parse_records([{"plan": "zzz", "usage": 1.0}], 10)
    assert model.predict(schema.to_model_input(batch)).shape == (1,)
    assert "examples" in feature_schema(plan) and "enum" not in feature_schema(plan)


def test_optional_columns_accept_null() -> None:
    frame = pd.DataFrame({"x": [1.0, None, 3.0], "y": [1.0, 2.0, 3.0]})
    signature = infer_signature(frame)
    schema = build_input_schema(object(), signature, None)
    assert [f.required for f in schema.features] == [False, True]
    batch = schema.parse_records([{"x": None, "y": 1.0}, {"y": 2.0}], 10)
    assert math.isnan(batch.columns["x"][0]) and batch.columns["x"][1] is not None


def test_tensor_signature_takes_rows_as_an_array() -> None:
    x = np.random.default_rng(0).normal(size=(30, 3))
    y = (x[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    schema = build_input_schema(model, infer_signature(x, y), None)
    assert schema.tensor and schema.names == ("x0", "x1", "x2")
    array = schema.to_model_input(schema.parse_rows([[0.1, 0.2, 0.3]], 10))
    assert isinstance(array, np.ndarray) and array.shape == (1, 3)
