"""The Open Inference Protocol (V2) codec: the infer envelope, tensors, shapes and datatypes onto the
model's contract, and the output tensors; no HTTP."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from model_api.api.v2_codec import MAX_INPUTS, datatype_of, encode_outputs, parse_infer
from model_api.contract import InputSchema
from model_api.dataplane import InferenceResult
from model_api.errors import BadRequest, InvalidInput, TooManyRows
from model_api.inputs import ModelSpec
from model_api.metrics import Metrics
from model_api.predictor import Prediction, Predictor
from model_api.registry import LoadedModel
from model_api.signature import build_input_schema, model_spec

DATATYPE = {"tenure_months": "INT64", "monthly_charges": "FP64"}


@pytest.fixture(scope="module")
def schema(champion: LoadedModel) -> InputSchema:
    return build_input_schema(champion.model, champion.signature, champion.input_example)


def columns(schema: InputSchema, rows: int | None = None) -> list[dict[str, Any]]:
    """One input per feature, shape [N], from the model's input example."""
    records = schema.example if rows is None else [schema.example[0]] * rows
    inputs = []
    for f in schema.features:
        values = [r[f.name] for r in records]
        datatype = (
            "BYTES" if isinstance(values[0], str) else ("INT64" if isinstance(values[0], int) else "FP64")
        )
        inputs.append({"name": f.name, "datatype": datatype, "shape": [len(values)], "data": values})
    return inputs


def batch_of(schema: InputSchema, body: dict[str, Any], max_rows: int = 100) -> Any:
    spec = ModelSpec(schema, None, None, None)
    return parse_infer(body).inference.inputs.to_model_input(spec, None, max_rows)


def test_columns_shaped_n_and_n_by_1_and_one_2d_input_give_the_same_batch(schema: InputSchema) -> None:
    expected = schema.parse_records([dict(r) for r in schema.example], 100)
    flat = batch_of(schema, {"inputs": columns(schema)})
    tall = columns(schema)
    for t in tall:
        t["shape"], t["data"] = [len(t["data"]), 1], [[v] for v in t["data"]]
    rows = [[r[n] for n in schema.names] for r in schema.example]
    one = {"name": "x", "datatype": "BYTES", "shape": [len(rows), len(schema.names)], "data": rows}
    for batch in (flat, batch_of(schema, {"inputs": tall}), batch_of(schema, {"inputs": [one]})):
        assert batch.n_rows == expected.n_rows and batch.columns == expected.columns


def test_the_envelope_id_and_outputs(schema: InputSchema) -> None:
    plain = parse_infer({"inputs": columns(schema)})
    assert plain.id is None and plain.outputs == ("predict",)
    assert plain.inference.return_probabilities is False
    asked = parse_infer(
        {"id": "r-1", "inputs": columns(schema), "outputs": [{"name": "predict_proba"}, {"name": "predict"}]}
    )
    assert asked.id == "r-1" and asked.outputs == ("predict_proba", "predict")
    assert asked.inference.return_probabilities and asked.inference.probabilities_field == "outputs"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"inputs": [], "x": 1}, "unknown field(s): x"),
        ({"inputs": [], "id": 1}, "id must be a string"),
        ({"inputs": [], "parameters": []}, "parameters must be an object"),
        ({"inputs": []}, "non-empty list"),
        ({"inputs": [1] * (MAX_INPUTS + 1)}, f"at most {MAX_INPUTS}"),
        ({"inputs": [{}], "outputs": []}, "outputs must be"),
        ({"inputs": [{}], "outputs": [{"name": "explain"}]}, "unknown output 'explain'"),
        ({"inputs": [3]}, "inputs[0] must be an object"),
        ({"inputs": [{"name": "a", "colour": 1}]}, "unknown field(s): colour"),
        ({"inputs": [{"name": "", "shape": [1], "datatype": "FP64", "data": [1]}]}, "name must be"),
        ({"inputs": [{"name": "a", "shape": [-1], "datatype": "FP64", "data": [1]}]}, "non-negative"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP128", "data": [1]}]}, "datatype must be"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": 1}]}, "data must be a list"),
        (
            {"inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [1, 2]}]},
            "needs 4 value(s)",
        ),
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1], "parameters": []}]},
            "parameters must be an object",
        ),
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}] * 2},
            "names must be unique",
        ),
    ],
)
def test_a_malformed_envelope_or_tensor_is_a_bad_request(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_infer(body)
    assert message in err.value.message


def test_deeply_nested_data_is_flattened_without_recursion() -> None:
    data: list[Any] = [1.0]
    for _ in range(5000):
        data = [data]
    (tensor,) = parse_infer(
        {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": data}]}
    ).inference.inputs.tensors  # type: ignore[attr-defined]
    assert tensor.data == [1.0] and tensor.shape == (1,)


def test_columns_that_do_not_fit_the_features(schema: InputSchema) -> None:
    inputs = columns(schema)
    inputs[0]["datatype"] = "BYTES"
    inputs[1]["shape"] = [1, len(inputs[1]["data"])]
    with pytest.raises(InvalidInput) as err:
        batch_of(schema, {"inputs": inputs})
    faults = [(d.field, d.message) for d in err.value.details]
    assert ("tenure_months", "datatype BYTES does not fit a long feature; send INT64") in faults
    assert any(f == "monthly_charges" and m.startswith("shape must be [rows]") for f, m in faults)
    uneven = columns(schema)
    uneven[0]["data"], uneven[0]["shape"] = uneven[0]["data"][:1], [1]
    with pytest.raises(InvalidInput, match="same number of rows"):
        batch_of(schema, {"inputs": uneven})
    with pytest.raises(InvalidInput, match="missing input"):
        batch_of(schema, {"inputs": columns(schema)[1:]})


def test_one_2d_input_needs_the_models_width_and_the_row_limit(schema: InputSchema) -> None:
    narrow = {"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}
    with pytest.raises(InvalidInput, match=f"the model takes {len(schema.names)}"):
        batch_of(schema, {"inputs": [narrow]})
    rows = [[schema.example[0][n] for n in schema.names]] * 3
    wide = {"name": "x", "datatype": "BYTES", "shape": [3, len(schema.names)], "data": rows}
    with pytest.raises(TooManyRows, match="3 rows"):
        batch_of(schema, {"inputs": [wide]}, max_rows=2)
    with pytest.raises(TooManyRows):
        batch_of(schema, {"inputs": columns(schema, rows=3)}, max_rows=2)


@pytest.mark.parametrize(
    ("values", "datatype"),
    [([True, False], "BOOL"), ([1, 2], "INT64"), ([1, 2.5], "FP64"), (["a", 1], "BYTES"), ([], "INT64")],
)
def test_output_datatypes_follow_the_json_values(values: list[Any], datatype: str) -> None:
    assert datatype_of(values) == datatype


def test_outputs_are_encoded_in_the_order_asked(champion: LoadedModel, schema: InputSchema) -> None:
    predictor = Predictor(champion, model_spec(champion), threads=1, metrics=Metrics())
    try:
        proba = np.array([[0.25, 0.75], [1.0, 0.0]])
        result = InferenceResult(predictor, Prediction([1, 0], proba), n_rows=2)
        request = parse_infer(
            {"inputs": columns(schema), "outputs": [{"name": "predict_proba"}, {"name": "predict"}]}
        )
        assert encode_outputs(request, result) == [
            {"name": "predict_proba", "datatype": "FP64", "shape": [2, 2], "data": [0.25, 0.75, 1.0, 0.0]},
            {"name": "predict", "datatype": "INT64", "shape": [2], "data": [1, 0]},
        ]
    finally:
        predictor.close()
