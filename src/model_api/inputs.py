"""A request's rows, as its protocol received them, turned into what the served model takes.

Two paths, decided per model at load (`ModelSpec.contract`):

- the contract path: the model is a scikit-learn estimator predicting with `predict` from scalar
  columns; rows are checked by our contract (`contract.py`), merged with other requests' rows and
  given to the raw estimator (and its fast path);
- the pyfunc path, for every other model MLflow can load: the request is parsed by MLflow's own
  scoring-server parsers (the four JSON forms, CSV, Parquet) and given, alone, to the pyfunc
  model's `predict(data, params=...)`, which enforces the signature itself.

One difference from MLflow, on purpose: a JSON null in a column of strings reaches the model as
NaN, pandas' missing value, whatever else is in the request. MLflow's parsers leave it None when
no other row has a string there, and a scikit-learn encoder then reads None as one more category
(see README, "Where we differ from MLflow").
"""

from __future__ import annotations

import importlib.util
import io
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from model_api.contract import Batch, InputSchema
from model_api.errors import BadRequest, ErrorDetail, InvalidInput, TooManyRows, UnsupportedMediaType
from model_api.values import MAX_DETAILS, unknown_detail

JSON_FORMS = ("dataframe_split", "dataframe_records", "instances", "inputs")
"""The JSON forms of MLflow's scoring protocol; a body carries exactly one, and optionally params."""


@dataclass(frozen=True)
class ModelSpec:
    """What a request is parsed against: MLflow's view of the model's inputs and params, and our
    contract when the model takes the contract path."""

    contract: InputSchema | None
    input_schema: Any
    """The signature's input Schema (mlflow.types.Schema), or None for a model without one."""
    params_schema: Any
    """The signature's ParamSchema, or None for a model that takes no params."""
    metadata: Any
    """The model's MLmodel (mlflow.models.Model)."""
    tabular: bool = False
    """The model is a scikit-learn, XGBoost or LightGBM model, which reads a table."""
    relaxed_schema: Any = None
    """The input schema with its optional integer columns as doubles (`dtypes.relaxed_schema`),
    or None when it has none: what a row with a missing value in such a column is read with."""


@dataclass(frozen=True)
class PyfuncBatch:
    """One request's input on the pyfunc path: MLflow's parse of it, and its params. Never merged
    with another request's rows: a pyfunc model's answer for a row may depend on the rows it is
    given with."""

    data: Any
    params: dict[str, Any] | None
    n_rows: int


ModelInput = Batch | PyfuncBatch


class ModelInputs(Protocol):
    """A request's rows as its protocol received them; the data plane turns them into the served
    model's input when it predicts (the model may change between parsing and predicting)."""

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        """The model's input; raises InvalidInput (422), BadRequest (400) or TooManyRows (413)."""
        ...


def _mlflow_error(exc: Exception) -> InvalidInput:
    """MLflow's parse errors quote the input: keep only what kind of fault it is."""
    return InvalidInput(
        "the input does not fit the model's signature as MLflow parses it "
        f"({type(exc).__name__}); see the model's signature at /model/info"
    )


def count_rows(data: Any) -> int:
    """Rows in a parsed model input (a dict of tensors counts its first one's)."""
    if isinstance(data, pd.DataFrame | pd.Series | np.ndarray):
        return int(data.shape[0]) if data.ndim else 1
    if isinstance(data, dict):
        first: Any = next(iter(data.values()), [])
        return count_rows(first) if not isinstance(first, str | bytes) else 1
    if isinstance(data, list):
        return len(data)
    return 1


_STRINGS: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object
"""The dtype pandas gives a column of strings with missing values (pandas 3: `str`, NaN missing)."""


def missing_as_nan(data: Any, schema: Any = None) -> Any:
    """JSON nulls in columns of strings become NaN, the missing value pandas and scikit-learn
    expect, so a row's input never depends on the other rows of its request: a column the
    signature declares as string (or, without a signature, one holding strings or nothing but
    nulls). Columns of other types are left to MLflow; arrays and maps keep their None."""
    if not isinstance(data, pd.DataFrame):
        return data
    declared: dict[str, str] = {}
    if schema is not None and schema.has_input_names() and not schema.is_tensor_spec():
        declared = {s.name: str(getattr(s.type, "name", "")).lower() for s in schema.inputs}
    for name in data.columns:
        column = data[name]
        if column.dtype != object or not any(v is None for v in column):
            continue
        if not all(v is None or type(v) is str for v in column):
            continue
        kind = declared.get(str(name))
        if kind == "string" or (not declared and any(type(v) is str for v in column)):
            values = [math.nan if v is None else v for v in column]
            data[name] = pd.Series(values, index=column.index, dtype=_STRINGS)
        elif not declared:
            data[name] = pd.Series(math.nan, index=column.index, dtype=np.float64)
    return data


def check_envelope(payload: Any) -> None:
    """A JSON body of MLflow's scoring protocol carries exactly one of its forms, and optionally
    params; raises BadRequest (400) naming what it found (plain names only)."""
    if type(payload) is not dict:
        raise BadRequest(f"the body must be a JSON object with one of {', '.join(JSON_FORMS)}")
    forms = [k for k in payload if k in JSON_FORMS]
    unknown = [k for k in payload if k not in JSON_FORMS and k != "params"]
    if len(forms) != 1 or unknown:
        raise BadRequest(
            f"send exactly one of {', '.join(JSON_FORMS)} (and optionally params)",
            [unknown_detail("unknown field", k) for k in unknown[:MAX_DETAILS]],
        )


def parse_mlflow_json(payload: Any, spec: ModelSpec, max_rows: int) -> PyfuncBatch:
    """A JSON body in MLflow's scoring protocol: exactly one of `dataframe_split`,
    `dataframe_records`, `instances` or `inputs`, and optional `params`, parsed by MLflow's own
    scoring server functions (mlflow.pyfunc.scoring_server)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    check_envelope(payload)
    params = payload.get("params")
    payload = as_table(payload, spec)
    try:
        try:
            parsed = scoring_server._parse_json_data(dict(payload), spec.metadata, spec.input_schema)  # type: ignore[no-untyped-call]
        except MlflowException:
            # An optional integer column holding a missing value (dtypes.relaxed_schema).
            if spec.relaxed_schema is None:
                raise
            parsed = scoring_server._parse_json_data(dict(payload), spec.metadata, spec.relaxed_schema)  # type: ignore[no-untyped-call]
    except (MlflowException, ValueError, TypeError, KeyError, AttributeError) as exc:
        # MLflow's parsers raise more than MlflowException on bodies they cannot read.
        raise _mlflow_error(exc) from exc
    data = missing_as_nan(parsed.data, spec.input_schema)
    return _sized(PyfuncBatch(data, params, count_rows(data)), max_rows)


def _columns_of(value: Any) -> dict[str, list[Any]] | None:
    """A dict of equal-length lists (columns), or a list of dicts (records) as columns; else None."""
    if type(value) is list and value and all(type(r) is dict for r in value):
        names = list(dict.fromkeys(k for r in value for k in r))
        return {k: [r.get(k) for r in value] for k in names}
    lists = type(value) is dict and value and all(type(v) is list for v in value.values())
    if lists and len({len(v) for v in value.values()}) == 1:
        return {str(k): v for k, v in value.items()}
    return None


def as_table(payload: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """`instances` and `inputs` holding rows or columns, sent to a model that reads a table (a
    column signature, or a scikit-learn/XGBoost/LightGBM model without one), read as the table
    `dataframe_split` would give. MLflow reads them as tensors instead: a null string becomes the
    text 'None', binary columns are not base64-decoded, array and object columns fail, and a
    pipeline without a signature is handed a dict of arrays. The trainer meant the table."""
    schema = spec.input_schema
    table_model = (schema is not None and not schema.is_tensor_spec() and schema.has_input_names()) or (
        schema is None and spec.tabular
    )
    if not table_model or spec.metadata is None or _from_type_hints(spec):
        return payload
    form = next(k for k in payload if k in JSON_FORMS)
    if form not in ("instances", "inputs"):
        return payload
    columns = _columns_of(payload[form])
    if columns is None:
        return payload
    rows = [list(r) for r in zip(*columns.values(), strict=True)]
    return {"dataframe_split": {"columns": list(columns), "data": rows}, "params": payload.get("params")}


def _from_type_hints(spec: ModelSpec) -> bool:
    check = getattr(spec.metadata, "_is_signature_from_type_hint", None)
    return bool(check()) if check is not None else False


def parse_table(body: bytes, media: str, spec: ModelSpec, max_rows: int) -> PyfuncBatch:
    """A CSV or Parquet body, parsed as MLflow's scoring server parses it (no params)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        if media == "text/csv":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("the CSV body is not UTF-8 text") from None
            try:
                data = parse_csv(text, spec.input_schema)
            except BadRequest:
                if spec.relaxed_schema is None:
                    raise
                data = parse_csv(text, spec.relaxed_schema)
        else:
            if importlib.util.find_spec("pyarrow") is None:
                raise UnsupportedMediaType(
                    "Parquet bodies need the pyarrow package, which this server lacks; send JSON or CSV"
                )
            data = scoring_server.parse_parquet_input(io.BytesIO(body))  # type: ignore[no-untyped-call]
    except MlflowException as exc:
        raise BadRequest(f"the body is not a table MLflow can read as {media}") from exc
    data = missing_as_nan(data, spec.input_schema)
    return _sized(PyfuncBatch(data, None, count_rows(data)), max_rows)


def parse_csv(text: str, schema: Any) -> Any:
    """A CSV body as MLflow's scoring server reads it (`parse_csv_input`: pandas.read_csv with the
    signature's dtypes), except that datetime columns are parsed as dates: MLflow passes them to
    read_csv as a dtype, which pandas refuses, so no model with a datetime column could be called
    with CSV. Raises BadRequest (400)."""
    import pandas as pd

    if schema is None or not schema.has_input_names():
        dtypes: dict[str, Any] = {}
    else:
        dtypes = dict(zip(schema.input_names(), schema.pandas_types(), strict=True))
    dates = [name for name, dtype in dtypes.items() if np.dtype(dtype).kind == "M"]
    for name in dates:
        del dtypes[name]
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=dtypes or None, parse_dates=dates or None)
    except Exception as exc:
        raise BadRequest("the body is not a CSV table pandas can read with the model's column types") from exc
    return frame


def _sized(batch: PyfuncBatch, max_rows: int) -> PyfuncBatch:
    if batch.n_rows > max_rows:
        raise TooManyRows(f"{batch.n_rows} rows in one request; at most {max_rows} are allowed")
    return batch


def check_params(params: Any, params_schema: Any) -> None:
    """Refuse params MLflow would ignore or reject: not an object, sent to a model that takes
    none, unknown names, or values that do not fit their ParamSpec (InvalidInput, 422). The
    params themselves reach the model unchanged: MLflow applies the defaults and conversions."""
    if params is None:
        return
    if type(params) is not dict:
        raise InvalidInput("params must be an object", [ErrorDetail("expected an object", field="params")])
    if not params:
        return
    if params_schema is None:
        raise InvalidInput(
            "this model takes no params",
            [unknown_detail("unknown param", k) for k in list(params)[:MAX_DETAILS]],
        )
    from mlflow.exceptions import MlflowException
    from mlflow.types.schema import ParamSpec

    specs = {p.name: p for p in params_schema.params}
    faults = [unknown_detail("unknown param", k) for k in params if k not in specs]
    for name, value in params.items():
        spec = specs.get(name)
        if spec is None:
            continue
        try:
            ParamSpec.validate_param_spec(value, spec)
        except MlflowException:
            shape = "" if spec.shape is None else f" of shape {list(spec.shape)}"
            faults.append(ErrorDetail(f"expected {spec.dtype}{shape}", field=f"params.{name}"))
    if faults:
        raise InvalidInput("the params do not fit the model's params schema", faults[:MAX_DETAILS])


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header; a charset other than UTF-8 is refused (415)."""
    if not content_type:
        return ""
    media, _, rest = content_type.partition(";")
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType("only UTF-8 bodies are accepted")
    return media.strip().lower()
