"""The Open Inference Protocol (KServe V2) codec: tensors, datatypes, model metadata, and the infer
request and response in JSON, mapped onto the model's signature.

Source: the Open Inference Protocol's REST spec
(https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md).

A request carries the rows in one of two forms:

- one input per feature column, named after the feature, shape [N] or [N, 1]: what KServe and
  MLServer clients send for a DataFrame (content type "pd");
- a single 2-D input of shape [N, width], values in signature order.

Outputs are "predict" (one label per row) and, when asked for, "predict_proba" ([N, classes], in
the order of the model's classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from model_api.contract import Batch, InputSchema
from model_api.dataplane import InferenceRequest, InferenceResult
from model_api.errors import BadRequest, ErrorDetail, InvalidInput, TooManyRows
from model_api.features import Kind
from model_api.inputs import ModelInput, ModelSpec, parse_mlflow_json

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
OUTPUTS = (PREDICT, PREDICT_PROBA)

NUMERIC = frozenset(
    ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")
)
DATATYPES = NUMERIC | {"BOOL", "BYTES"}
KIND_DATATYPE = {
    Kind.DOUBLE: "FP64",
    Kind.FLOAT: "FP32",
    Kind.LONG: "INT64",
    Kind.INTEGER: "INT32",
    Kind.BOOLEAN: "BOOL",
    Kind.STRING: "BYTES",
}

_REQUEST_KEYS = frozenset(("id", "parameters", "inputs", "outputs"))
_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
RESERVED_PARAMETERS = frozenset(
    ("content_type", "headers", "binary_data_output", "binary_data", "binary_data_size", "classification")
)
"""Request parameters the Open Inference Protocol and its extensions (Triton's binary data) reserve for
themselves; the rest are the model's params."""
MAX_INPUTS = 1024
"""Most input tensors one request may carry (one per feature column)."""
_INPUT_KEYS = frozenset(("name", "shape", "datatype", "parameters", "data"))
_SHOWN = 64


@dataclass(frozen=True)
class Tensor:
    """One decoded request input: its values flattened in row-major order."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]


@dataclass(frozen=True)
class V2Inputs:
    """The request's tensors, checked against the served model's contract by the data plane:
    one input per feature column (handed over as columns), or one 2-D input in signature order."""

    tensors: tuple[Tensor, ...]

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        if spec.contract is None:
            return parse_mlflow_json(self._mlflow_form(spec) | {"params": params}, spec, max_rows)
        schema = spec.contract
        known = set(schema.names)
        names = [t.name for t in self.tensors]
        if all(n in known for n in names):
            return _columns_batch(self.tensors, schema, max_rows)
        if len(self.tensors) == 1 and len(self.tensors[0].shape) == 2:
            return _rows_batch(self.tensors[0], schema, max_rows)
        strangers = ", ".join(_short(n) for n in names if n not in known)
        raise InvalidInput(
            f"unknown input(s): {strangers}; send one input per feature ({', '.join(schema.names)}) "
            "or a single 2-D input in that order"
        )

    def _mlflow_form(self, spec: ModelSpec) -> dict[str, Any]:
        """The tensors in MLflow's scoring protocol, as MLServer's MLflow runtime maps them:
        named tensors for a tensor signature (`inputs`), columns of a table otherwise."""
        schema = spec.input_schema
        if schema is not None and schema.is_tensor_spec():
            arrays: dict[str, np.ndarray] = {
                t.name: np.asarray(t.data, dtype=_NUMPY.get(t.datatype, object)).reshape(t.shape)
                for t in self.tensors
            }
            if len(arrays) == 1 and not schema.has_input_names():
                return {"inputs": next(iter(arrays.values())).tolist()}
            return {"inputs": {name: a.tolist() for name, a in arrays.items()}}
        if len(self.tensors) == 1 and len(self.tensors[0].shape) == 2 and self.tensors[0].shape[1] > 1:
            t = self.tensors[0]
            width = t.shape[1]
            rows = [t.data[i * width : (i + 1) * width] for i in range(t.shape[0])]
            names = (
                schema.input_names()
                if schema is not None and schema.has_input_names()
                else list(range(width))
            )
            return {"dataframe_split": {"columns": names, "data": rows}}
        counts = {t.shape[0] for t in self.tensors}
        if len(counts) > 1:
            raise InvalidInput(f"every input must have the same number of rows; got {sorted(counts)}")
        columns = [t.name for t in self.tensors]
        rows = [list(r) for r in zip(*(t.data for t in self.tensors), strict=True)]
        return {"dataframe_split": {"columns": columns, "data": rows}}


@dataclass(frozen=True)
class V2Request:
    """A parsed infer request: what goes to the data plane, the outputs asked for, the id to echo."""

    id: str | None
    inference: InferenceRequest
    outputs: tuple[str, ...]


def _short(name: Any) -> str:
    return str(name)[:_SHOWN]


def _flatten(data: list[Any]) -> list[Any]:
    if not any(type(v) is list for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative, so deep nesting cannot exhaust the stack
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _tensor(raw: Any, index: int) -> Tensor:
    where = f"inputs[{index}]"
    if type(raw) is not dict:
        raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
    unknown = sorted(_short(k) for k in raw if k not in _INPUT_KEYS)
    if unknown:
        raise BadRequest(f"{where} has unknown field(s): {', '.join(unknown)}")
    name, shape, datatype, data = (raw.get(k) for k in ("name", "shape", "datatype", "data"))
    parameters = raw.get("parameters", {})
    if type(name) is not str or not name:
        raise BadRequest(f"{where}.name must be a non-empty string")
    where = f"input '{_short(name)}'"
    if type(parameters) is not dict:
        raise BadRequest(f"{where}: parameters must be an object")
    if "binary_data_size" in parameters:
        raise BadRequest(f"{where}: binary tensor data is not supported; send the data as JSON")
    if type(shape) is not list or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"{where}: shape must be a non-empty list of non-negative integers")
    if type(datatype) is not str or datatype not in DATATYPES:
        raise BadRequest(f"{where}: datatype must be one of {', '.join(sorted(DATATYPES))}")
    if type(data) is not list:
        raise BadRequest(f"{where}: data must be a list")
    flat = _flatten(data)
    size = math.prod(shape)
    if len(flat) != size:
        raise BadRequest(f"{where}: shape {shape} needs {size} value(s), data has {len(flat)}")
    return Tensor(name, tuple(shape), datatype, flat)


def _fits(datatype: str, kind: Kind) -> bool:
    if kind is Kind.STRING:
        return datatype == "BYTES"
    if kind is Kind.BOOLEAN:
        return datatype == "BOOL"
    return datatype in NUMERIC


def _columns_batch(tensors: tuple[Tensor, ...], schema: InputSchema, max_rows: int) -> Batch:
    """One input per feature column, handed to the contract as columns."""
    features = {f.name: f for f in schema.features}
    faults = []
    for t in tensors:
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
            shape = list(t.shape)
            faults.append(ErrorDetail(f"shape must be [rows] or [rows, 1], got {shape}", field=t.name))
        kind = features[t.name].kind
        if not _fits(t.datatype, kind):
            faults.append(
                ErrorDetail(
                    f"datatype {t.datatype} does not fit a {kind.value} feature; send {KIND_DATATYPE[kind]}",
                    field=t.name,
                )
            )
    missing = [f.name for f in schema.features if f.required and f.name not in {t.name for t in tensors}]
    if missing:
        raise InvalidInput(
            f"missing input(s) for feature(s): {', '.join(missing)}",
            [ErrorDetail("missing input", field=n) for n in missing[:10]],
        )
    if faults:
        raise InvalidInput("inputs do not fit the model's features", faults[:10])
    counts = {t.shape[0] for t in tensors}
    if len(counts) > 1:
        raise InvalidInput(f"every input must have the same number of rows; got {sorted(counts)}")
    # The contract checks and converts the columns in place: give it its own lists.
    return schema.parse_columns({t.name: list(t.data) for t in tensors}, counts.pop(), max_rows)


def _rows_batch(tensor: Tensor, schema: InputSchema, max_rows: int) -> Batch:
    """A single 2-D input, values in signature order."""
    n_rows, width = tensor.shape
    if width != len(schema.names):
        raise InvalidInput(
            f"input '{_short(tensor.name)}' has {width} columns; the model takes {len(schema.names)} "
            f"in this order: {', '.join(schema.names)}"
        )
    if n_rows > max_rows:
        raise TooManyRows(f"{n_rows} rows in one request; at most {max_rows} are allowed")
    data = tensor.data
    rows = [data[i * width : (i + 1) * width] for i in range(n_rows)]
    return schema.parse_rows(rows, max_rows, _short(tensor.name))


def _outputs(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return (PREDICT,)
    if type(raw) is not list or not raw:
        raise BadRequest("outputs must be a non-empty list of objects with a name")
    names: list[str] = []
    for i, item in enumerate(raw):
        name = item.get("name") if type(item) is dict else None
        if type(name) is not str:
            raise BadRequest(f"outputs[{i}] must be an object with a name")
        if name not in OUTPUTS:
            raise BadRequest(f"unknown output '{_short(name)}'; the outputs are {', '.join(OUTPUTS)}")
        if name not in names:
            names.append(name)
    return tuple(names)


def parse_infer(payload: Any) -> V2Request:
    """Parse an infer request body: its envelope and tensors (the data plane checks them against
    the served model's contract). Raises BadRequest (400)."""
    if type(payload) is not dict:
        raise BadRequest("the body must be a JSON object with 'inputs'")
    unknown = sorted(_short(k) for k in payload if k not in _REQUEST_KEYS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; use id, parameters, inputs, outputs")
    request_id = payload.get("id")
    if request_id is not None and type(request_id) is not str:
        raise BadRequest("id must be a string")
    parameters = payload.get("parameters", {})
    if type(parameters) is not dict:
        raise BadRequest("parameters must be an object")
    params = {k: v for k, v in parameters.items() if k not in RESERVED_PARAMETERS} or None
    raw_inputs = payload.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise BadRequest("inputs must be a non-empty list of tensors")
    if len(raw_inputs) > MAX_INPUTS:
        raise BadRequest(f"{len(raw_inputs)} inputs; at most {MAX_INPUTS} are read")
    outputs = _outputs(payload.get("outputs"))
    tensors = tuple(_tensor(raw, i) for i, raw in enumerate(raw_inputs))
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise BadRequest("input names must be unique")
    inference = InferenceRequest(
        V2Inputs(tensors),
        params,
        return_probabilities=PREDICT_PROBA in outputs,
        probabilities_field="outputs",
    )
    return V2Request(request_id, inference, outputs)


# -- responses ------------------------------------------------------------------------------------


def datatype_of(values: list[Any]) -> str:
    """The datatype of output values as JSON carries them."""
    if values and all(type(v) is bool for v in values):
        return "BOOL"
    if all(type(v) is int for v in values):
        return "INT64"
    if all(type(v) in (int, float) for v in values):
        return "FP64"
    return "BYTES"


def encode_outputs(request: V2Request, result: InferenceResult) -> list[dict[str, Any]]:
    """The response tensors for the outputs asked for, in the order asked."""
    n_rows = result.n_rows
    out: list[dict[str, Any]] = []
    for name in request.outputs:
        if name == PREDICT and result.prediction.output is not None:
            out.extend(encode_output(result.prediction.output))
        elif name == PREDICT:
            out.append(_tensor_of(PREDICT, result.prediction.labels))
        else:
            proba = result.prediction.probabilities
            assert proba is not None, "asked for, so computed"
            shape = [n_rows, proba.shape[1]]
            out.append(
                {"name": PREDICT_PROBA, "datatype": "FP64", "shape": shape, "data": proba.ravel().tolist()}
            )
    return out


def _tensor_of(name: str, values: Any) -> dict[str, Any]:
    """One response tensor from an array-like: its shape, its datatype, its data flattened."""
    array = np.asarray(values)
    if array.dtype.kind in "OUSMm":
        data = [v.isoformat() if hasattr(v, "isoformat") else v for v in array.ravel().tolist()]
        return {"name": name, "datatype": datatype_of(data), "shape": list(array.shape), "data": data}
    datatype = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}.get(array.dtype.kind, "BYTES")
    if array.dtype == np.float32:
        datatype = "FP32"
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}


def encode_output(output: Any) -> list[dict[str, Any]]:
    """A pyfunc model's output as response tensors: a DataFrame one tensor per column (its own
    datatype and shape), a dict one per key, anything else one `predict` tensor of its shape."""
    if isinstance(output, pd.DataFrame):
        return [_tensor_of(str(c), output[c].to_numpy()) for c in output.columns]
    if isinstance(output, dict):
        return [_tensor_of(str(k), v) for k, v in output.items()]
    if isinstance(output, pd.Series):
        return [_tensor_of(PREDICT, output.to_numpy())]
    if isinstance(output, str | bytes | int | float | bool):
        return [_tensor_of(PREDICT, [output])]
    return [_tensor_of(PREDICT, output)]
