"""The reference: what MLflow's own pyfunc model answers to one `/invocations` body, in process.

`build_body(entry, form)` writes a zoo entry's request in one of MLflow's scoring forms:
`dataframe_split`, `dataframe_records`, `instances`, `inputs` (JSON, with `params` when the entry
has them), `csv` (text/csv) or `parquet` (application/vnd.apache.parquet; neither carries params).

`reference_answer(model, body)` parses the body with MLflow's scoring-server functions
(`mlflow.pyfunc.scoring_server`: `_decode_json_input`, `_split_data_and_params`,
`infer_and_parse_data`, `parse_csv_input`, `parse_parquet_input`), calls
`model.predict(data, params=params)` as the scoring server does (in its serving environment), and
renders `{"predictions": ...}` with `predictions_to_json`. An `MlflowException` becomes MLflow's
error answer (its HTTP status and `{"error_code", "message", ...}`), as `mlflow models serve`
sends it. Answers are parsed JSON (MLflow writes NaN as the bare token `NaN`); `json_diff`
compares them with exact float equality, NaN equal to NaN, and int distinct from float.
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass
from typing import Any

from tests.conformance.zoo import Entry

FORMS = ("dataframe_split", "dataframe_records", "instances", "inputs", "csv", "parquet")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
PARQUET_TYPE = "application/vnd.apache.parquet"

# Where MLflow's own answer (in process and from `mlflow models serve`, MLflow 3.17.2, pandas 3)
# is not what the model's trainer meant, or MLflow refuses a valid input: (entry, form) -> why.
# test_zoo checks each one still happens: a listed form answers otherwise than the entry's other
# forms (or fails), and every other form agrees. The pseudo-form "rows alone" names a model whose
# row answers otherwise when sent alone than in a batch (test_zoo.ROW_DEPENDENT).
_NO_SIG_TF = (
    "Without a signature MLflow hands `instances`/`inputs` to the model as a dict of numpy arrays, "
    "not a DataFrame; the pipeline refuses it (400 BAD_REQUEST)."
)
_NULL_TO_NONE_STR = (
    "MLflow parses `instances`/`inputs` string columns into a numpy str array, so a JSON null reaches "
    "the model as the string 'None' (an unseen category), not as NaN as in the dataframe forms."
)
_LGBM_CATEGORY = (
    "MLflow cannot infer a signature from a pandas category column and logs none; JSON and CSV "
    "hand LightGBM a string column and it refuses it ('train and valid dataset categorical_feature "
    "do not match'). Only Parquet, which keeps the category dtype, is served."
)
_OPTIONAL_LONG = (
    "A null in an optional long column fails MLflow's schema enforcement in every form "
    "(split/records: IntCastingNaNError; instances/inputs: int(None); CSV: float data as int64; "
    "Parquet: float64 cannot be converted safely to int64), though the signature allows it."
)
_ARRAY_OBJECT = (
    "MLflow's TF-serving parser turns Array/Object columns into numpy arrays and fails "
    "(inhomogeneous shape; object to int64), though dataframe_split/records work."
)
# Not MLflow's doing, a limit of the form: the answer differs from the other forms, and every
# server that reads the body the same way answers as MLflow does.
FORM_LIMITS: dict[tuple[str, str], str] = {
    ("py-string-output", "csv"): "CSV cannot tell '' from a missing value: pandas reads '' as NaN.",
    (
        "py-every-type",
        "csv",
    ): "CSV carries no bytes: a binary column arrives as the text pandas wrote for it.",
}
KNOWN_MLFLOW_DIFFERENCES: dict[tuple[str, str], str] = {
    ("sk-pipeline-nosig", "instances"): _NO_SIG_TF,
    ("sk-pipeline-nosig", "inputs"): _NO_SIG_TF,
    ("sk-optional-string", "instances"): _NULL_TO_NONE_STR,
    ("sk-optional-string", "inputs"): _NULL_TO_NONE_STR,
    **{("lgbm-category", f): _LGBM_CATEGORY for f in ("dataframe_split", "dataframe_records", "instances")},
    **{("lgbm-category", f): _LGBM_CATEGORY for f in ("inputs", "csv")},
    **{("py-optional-long", f): _OPTIONAL_LONG for f in FORMS},
    ("py-array-object", "instances"): _ARRAY_OBJECT,
    ("py-array-object", "inputs"): _ARRAY_OBJECT,
    ("py-every-type", "instances"): (
        "`instances`/`inputs` do not base64-decode a binary column (the model gets the base64 text) "
        "and a null in an optional string column arrives as the string 'None'."
    ),
    ("py-every-type", "inputs"): "As for `instances`: binary not base64-decoded, null string as 'None'.",
    ("py-every-type", "csv"): (
        "MLflow's CSV parser passes datetime64 to pandas.read_csv as a dtype, which pandas refuses: "
        "no model with a datetime column can be called with CSV (400)."
    ),
    ("sk-optional-string", "rows alone"): (
        "A row's answer depends on its batch companions: alone, a null string column is all-None, "
        "pandas keeps object dtype and the model gets None (an unseen category: p=0.70); next to a "
        "string it is NaN (imputed: p=0.07)."
    ),
    ("py-every-type", "rows alone"): (
        "Ours on purpose: alone, a row's null in an optional string column is all the column holds; "
        "MLflow passes None, we pass NaN (pandas' missing value), as for every other row (issue 12's "
        "rule: a JSON null is NaN whatever else is in the batch)."
    ),
}


@dataclass(frozen=True)
class Body:
    """One `/invocations` request body: its form, bytes and content type."""

    form: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status and parsed JSON body (None when the body is not JSON)."""

    status: int
    body: Any


def size(entry: Entry) -> int:
    """How many rows (or tensor rows) the entry's request holds."""
    if entry.rows is not None:
        return len(entry.rows)
    tensor = entry.tensor
    return len(next(iter(tensor.values())) if isinstance(tensor, dict) else tensor)


def pick(entry: Entry, indices: list[int]) -> Entry:
    """The entry with only the rows (or tensor rows) at `indices`."""
    import dataclasses

    if entry.rows is not None:
        return dataclasses.replace(entry, rows=[entry.rows[i] for i in indices])
    tensor = entry.tensor
    if isinstance(tensor, dict):
        return dataclasses.replace(entry, tensor={k: [v[i] for i in indices] for k, v in tensor.items()})
    return dataclasses.replace(entry, tensor=[tensor[i] for i in indices])


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def build_body(entry: Entry, form: str, *, params: dict[str, Any] | None = None, bad: bool = False) -> Body:
    """The entry's request (or its `bad_rows` when `bad`) in `form`; `params` default to the entry's."""
    params = entry.params if params is None else params
    rows = entry.bad_rows if bad else entry.rows
    if form == "csv":
        return Body(form, entry.frame(rows).to_csv(index=False).encode(), CSV_TYPE)
    if form == "parquet":
        buffer = io.BytesIO()
        entry.frame(rows).to_parquet(buffer)
        return Body(form, buffer.getvalue(), PARQUET_TYPE)
    payload: dict[str, Any]
    if rows is not None:
        columns = _columns(rows)
        if form == "dataframe_split":
            payload = {form: {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}}
        elif form in ("dataframe_records", "instances") or entry.signature == "type-hint":
            payload = {form: rows}
        elif form == "inputs":
            payload = {form: {c: [row.get(c) for row in rows] for c in columns}}
        else:
            raise ValueError(f"unknown form {form!r}")
    else:
        tensor = entry.tensor
        if form == "instances" and isinstance(tensor, dict):
            n = size(entry)
            payload = {form: [{k: v[i] for k, v in tensor.items()} for i in range(n)]}
        elif form in ("instances", "inputs"):
            payload = {form: tensor}
        elif form == "dataframe_split":
            payload = {form: {"data": tensor}}
        elif form == "dataframe_records":
            payload = {form: [dict(enumerate(row)) for row in tensor]}
        else:
            raise ValueError(f"unknown form {form!r} for a tensor entry")
    if params:
        payload["params"] = params
    return Body(form, json.dumps(payload).encode(), JSON_TYPE)


@functools.lru_cache(maxsize=64)
def _load(tracking_uri: str, uri: str) -> Any:
    import mlflow.pyfunc

    from model_api.registry import mlflow_uris

    with mlflow_uris(tracking_uri):
        return mlflow.pyfunc.load_model(uri)


def load_reference_model(entry: Entry) -> Any:
    """MLflow's pyfunc model for the entry (loaded once per process)."""
    return _load(entry.tracking_uri, entry.uri)


def parse_body(model: Any, body: Body) -> tuple[Any, dict[str, Any] | None]:
    """The data and params MLflow's scoring server hands to `model.predict` for `body`."""
    from mlflow.pyfunc import scoring_server as ss

    schema = model.metadata.get_input_schema()
    if body.content_type == CSV_TYPE:
        return ss.parse_csv_input(io.StringIO(body.content.decode("utf-8")), schema=schema), None
    if body.content_type == PARQUET_TYPE:
        return ss.parse_parquet_input(io.BytesIO(body.content)), None
    decoded = ss._decode_json_input(body.content)
    data, params = ss._split_data_and_params(decoded)
    if model.metadata._is_signature_from_type_hint():
        # MLflow hands a type-hinted model the raw `inputs` value and lets the hints validate it.
        if ss.INPUTS not in data:
            from mlflow.exceptions import MlflowException

            raise MlflowException.invalid_parameter_value(
                "Request payload must be a dictionary with 'inputs' key when the model contains a "
                f"valid type hint. Found keys in payload: {data.keys()}."
            )
        return data[ss.INPUTS], params
    return ss.infer_and_parse_data(data, schema), params


def render(raw: Any) -> Any:
    """Predictions as MLflow's scoring server writes them, parsed back from its JSON text."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(raw, out)
    return json.loads(out.getvalue())


def reference_answer(model: Any, body: Body) -> Answer:
    """What `mlflow models serve` answers to `body` for `model`, computed in this process."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST
    from mlflow.pyfunc.utils.environment import _simulate_serving_environment

    with _simulate_serving_environment():
        try:
            data, params = parse_body(model, body)
            try:
                raw = model.predict(data, params=params)
            except MlflowException:
                raise
            except Exception as exc:  # the scoring server wraps any other model error the same way
                raise MlflowException(
                    "Encountered an unexpected error while evaluating the model. Verify that the "
                    "serialized input Dataframe is compatible with the model for inference.",
                    error_code=BAD_REQUEST,
                ) from exc
            return Answer(200, render(raw))
        except MlflowException as exc:
            return Answer(exc.get_http_status_code(), json.loads(exc.serialize_as_json()))


def _rows_of(predictions: Any, indices: list[int]) -> Any:
    if isinstance(predictions, dict):
        return {key: [values[i] for i in indices] for key, values in predictions.items()}
    return [predictions[i] for i in indices]


def is_known(entry: Entry, form: str, rows: list[int] | None = None) -> str | None:
    """The KNOWN_MLFLOW_DIFFERENCES sentence for this request, or None."""
    known = KNOWN_MLFLOW_DIFFERENCES.get((entry.name, form))
    if known is None and rows is not None and len(rows) == 1:
        known = KNOWN_MLFLOW_DIFFERENCES.get((entry.name, "rows alone"))
    return known


def intended_answer(entry: Entry, form: str, rows: list[int] | None = None) -> Answer:
    """What the model's trainer meant for the entry's request (or its `rows`) in `form`.

    MLflow's answer wherever it is not listed as wrong. Where it is: the same rows' answer in the
    entry's first form MLflow gets right, taken from the whole request (so nulls are NaN, as
    they are next to non-null companions); where no form is right (an optional long column),
    the model's own `predict` on the rows as pandas reads them (null as NaN).
    """
    picked = pick(entry, rows) if rows is not None else entry
    model = load_reference_model(entry)
    if not is_known(entry, form, rows):
        return reference_answer(model, build_body(picked, form))
    indices = rows if rows is not None else list(range(size(entry)))
    params = None if form not in ("csv", "parquet") else {}
    good = [f for f in entry.forms if (entry.name, f) not in KNOWN_MLFLOW_DIFFERENCES]
    if good:
        whole = reference_answer(model, build_body(entry, good[0], params=params))
        assert whole.status == 200, whole
        return Answer(200, {"predictions": _rows_of(whole.body["predictions"], indices)})
    frame = entry.frame()
    raw = model.unwrap_python_model().predict(None, frame, params)
    return Answer(200, {"predictions": _rows_of(render(raw)["predictions"], indices)})


def json_diff(left: Any, right: Any, path: str = "$", *, non_finite_as_null: bool = False) -> str | None:
    """Where two parsed JSON values differ (a JSON path and both values), or None when they are equal.

    Floats compare exactly, NaN equals NaN, an int never equals a float, key order is ignored.
    With `non_finite_as_null`, a null on the left matches NaN or +-Infinity on the right (MLflow
    writes those as bare tokens; strict JSON writers such as orjson write null).
    """
    if left is None and isinstance(right, float) and not math.isfinite(right) and non_finite_as_null:
        return None
    if isinstance(left, bool) or isinstance(right, bool):
        same = type(left) is type(right) and left == right
    elif isinstance(left, float) and isinstance(right, float):
        same = left == right or (math.isnan(left) and math.isnan(right))
    elif isinstance(left, dict) and isinstance(right, dict):
        if left.keys() != right.keys():
            return f"{path}: keys {sorted(left)} != {sorted(right)}"
        for key in left:
            if found := json_diff(
                left[key], right[key], f"{path}.{key}", non_finite_as_null=non_finite_as_null
            ):
                return found
        return None
    elif isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return f"{path}: length {len(left)} != {len(right)}"
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            if found := json_diff(a, b, f"{path}[{i}]", non_finite_as_null=non_finite_as_null):
                return found
        return None
    else:
        same = type(left) is type(right) and left == right
    return None if same else f"{path}: {left!r} != {right!r}"
