"""The conformance zoo: small models of every kind the service must serve as MLflow does.

Each `Spec` trains its model on a few hundred seeded synthetic rows, logs it with its MLflow
flavor and registers it in a real sqlite registry (`build_zoo(root)`), and gives the request
inputs to send: JSON-ready `rows` (column models) or `tensor` (tensor models: a nested list, or
a dict of name -> nested list), optional `params`, and `bad_rows` the model itself refuses.

`row_independent` says whether a row's answer may depend on its batch companions (scikit-learn,
XGBoost, LightGBM: no; a custom PythonModel: assumed yes, unless proven otherwise).
`forms` are the `/invocations` body forms the kind allows (see reference.py).
"""

from __future__ import annotations

import base64
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# MLflow warns, once per untyped PythonModel class and past any warnings filter (its own
# decorator resets them), that it has no type hints: those models are untyped on purpose.
from tests.conformance import pymodels

JSON_FORMS = ("dataframe_split", "dataframe_records", "instances", "inputs")
TABLE_FORMS = (*JSON_FORMS, "csv", "parquet")
N_ROWS = 300
# Explicit requirements: MLflow's own inference runs a subprocess per model (~3 s each).
PIP = ["mlflow", "scikit-learn", "pandas", "numpy"]


@dataclass(frozen=True)
class Entry:
    """One registered zoo model and the request it is checked with."""

    name: str
    kind: str
    signature: str
    """'columns', 'tensor', 'tensors' (dict of named tensors), 'type-hint' or 'none'."""
    uri: str
    tracking_uri: str = ""
    rows: list[dict[str, Any]] | None = None
    tensor: Any = None
    params: dict[str, Any] | None = None
    row_independent: bool = False
    has_proba: bool = False
    forms: tuple[str, ...] = TABLE_FORMS
    bad_rows: list[dict[str, Any]] | None = None
    frame_types: dict[str, str] = field(default_factory=dict)
    """Column -> pandas dtype for the CSV/Parquet frame a client would build ('datetime', 'bytes')."""

    @property
    def model_name(self) -> str:
        """The registered model's name, as the KServe protocols' routes name it."""
        return self.uri.removeprefix("models:/").split("/")[0].split("@")[0]

    def frame(self, rows: list[dict[str, Any]] | None = None) -> pd.DataFrame:
        """The entry's rows as the DataFrame a pandas client sends as CSV or Parquet."""
        frame = pd.DataFrame.from_records(rows if rows is not None else self.rows or [])
        for column, kind in self.frame_types.items():
            if kind == "datetime":
                frame[column] = pd.to_datetime(frame[column])
            elif kind == "bytes":
                frame[column] = frame[column].map(base64.b64decode)
            else:
                frame[column] = frame[column].astype(kind)
        return frame


@dataclass
class Context:
    """What a builder gets: the registry, a seeded generator, and one call to log and register."""

    tracking_uri: str
    root: Path
    rng: np.random.Generator

    def log(self, flavor: str, model: Any, name: str, alias: str | None = None, **kwargs: Any) -> str:
        """Log `model` with `mlflow.<flavor>.log_model`, register it as `name`; returns its URI."""
        import importlib

        import mlflow

        module = importlib.import_module(f"mlflow.{flavor}")
        kwargs.setdefault("pip_requirements", PIP)
        with mlflow.start_run(run_name=name):
            module.log_model(model, name="model", registered_model_name=name, **kwargs)
        if alias is None:
            return f"models:/{name}/1"
        mlflow.MlflowClient().set_registered_model_alias(name, alias, "1")
        return f"models:/{name}@{alias}"


@dataclass(frozen=True)
class Spec:
    """A zoo kind: its registered name, one-line description, and the builder that registers it."""

    name: str
    kind: str
    build: Callable[[Context, str], Entry]


# ---- synthetic tables ---------------------------------------------------------------------------


def numeric_table(rng: np.random.Generator, n: int = N_ROWS) -> tuple[pd.DataFrame, pd.Series]:
    frame = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n), "z": rng.uniform(0, 5, n)})
    label = ((frame.x + 0.5 * frame.y - 0.2 * frame.z + rng.normal(0, 0.3, n)) > -0.5).astype("int64")
    return frame, label


NUMERIC_ROWS = [
    {"x": 0.5, "y": -1.25, "z": 2.0},
    {"x": -2.0, "y": 0.75, "z": 4.5},
    {"x": 1e-3, "y": 3.0, "z": 0.0},
    {"x": 12.5, "y": -7.0, "z": 1.0},  # far outside the training range
]


def mixed_table(rng: np.random.Generator, n: int = N_ROWS, missing: bool = False) -> tuple[pd.DataFrame, Any]:
    plan = rng.choice(["basic", "plus", "pro"], size=n).astype(object)
    if missing:
        plan[rng.random(n) < 0.2] = np.nan
    frame = pd.DataFrame(
        {"age": rng.integers(18, 80, n).astype("int64"), "spend": rng.gamma(2.0, 30.0, n), "plan": plan}
    )
    bonus = pd.Series(plan).map({"basic": 0.0, "plus": 1.0, "pro": 2.0}).fillna(-1.5)
    label = ((frame.spend / 40 + bonus - frame.age / 40 + rng.normal(0, 0.5, n)) > 0.5).astype("int64")
    return frame, label


MIXED_ROWS = [
    {"age": 25, "spend": 80.5, "plan": "pro"},
    {"age": 61, "spend": 12.0, "plan": "basic"},
    {"age": 40, "spend": 55.25, "plan": "plus"},
    {"age": 33, "spend": 0.0, "plan": "enterprise"},  # a category never seen in training
]


def _column_transformer_pipeline(final: Any, impute: bool = False) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    categorical: Any = OneHotEncoder(handle_unknown="ignore")
    if impute:
        categorical = make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"), categorical)
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "spend"]), ("cat", categorical, ["plan"])])
    return Pipeline([("pre", pre), ("model", final)])


# ---- builders: scikit-learn ---------------------------------------------------------------------


def sk_classifier(ctx: Context, name: str) -> Entry:
    from sklearn.linear_model import LogisticRegression

    frame, label = numeric_table(ctx.rng)
    model = LogisticRegression().fit(frame, label)
    uri = ctx.log("sklearn", model, name, alias="champion", input_example=frame.head(3))
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True, has_proba=True)


def sk_regressor(ctx: Context, name: str) -> Entry:
    from sklearn.ensemble import RandomForestRegressor

    frame, _ = numeric_table(ctx.rng)
    target = frame.x * 2 - frame.y + ctx.rng.normal(0, 0.1, len(frame))
    model = RandomForestRegressor(n_estimators=8, max_depth=5, random_state=0).fit(frame, target)
    uri = ctx.log(
        "sklearn", model, name, input_example=frame.head(3), skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True)


def sk_pipeline(ctx: Context, name: str) -> Entry:
    from sklearn.ensemble import RandomForestClassifier

    frame, label = mixed_table(ctx.rng)
    model = _column_transformer_pipeline(RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0))
    model.fit(frame, label)
    uri = ctx.log(
        "sklearn", model, name, input_example=frame.head(3), skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
    return Entry(name, "", "columns", uri, rows=MIXED_ROWS, row_independent=True, has_proba=True)


def sk_pipeline_nosig(ctx: Context, name: str) -> Entry:
    from sklearn.linear_model import LogisticRegression

    frame, label = mixed_table(ctx.rng)
    model = _column_transformer_pipeline(LogisticRegression()).fit(frame, label)
    uri = ctx.log("sklearn", model, name)
    return Entry(name, "", "none", uri, rows=MIXED_ROWS, row_independent=True, has_proba=True)


def sk_multioutput(ctx: Context, name: str) -> Entry:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    frame, label = numeric_table(ctx.rng)
    labels = pd.DataFrame({"a": label, "b": (frame.z > 2.5).astype("int64")})
    model = MultiOutputClassifier(LogisticRegression()).fit(frame, labels)
    uri = ctx.log("sklearn", model, name, input_example=frame.head(3))
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True, has_proba=True)


def sk_predict_proba(ctx: Context, name: str) -> Entry:
    from sklearn.linear_model import LogisticRegression

    frame, label = numeric_table(ctx.rng)
    model = LogisticRegression().fit(frame, label)
    uri = ctx.log("sklearn", model, name, input_example=frame.head(3), pyfunc_predict_fn="predict_proba")
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True, has_proba=True)


def sk_optional_string(ctx: Context, name: str) -> Entry:
    from sklearn.linear_model import LogisticRegression

    frame, label = mixed_table(ctx.rng, missing=True)
    model = _column_transformer_pipeline(LogisticRegression(), impute=True).fit(frame, label)
    example = pd.concat([frame[frame.plan.isna()].head(1), frame[frame.plan.notna()].head(2)])
    uri = ctx.log("sklearn", model, name, input_example=example, skops_trusted_types=["numpy.dtype"])
    rows = [
        *MIXED_ROWS[:2],
        {"age": 52, "spend": 70.0, "plan": None},
        {"age": 29, "spend": 20.0, "plan": None},
    ]
    return Entry(name, "", "columns", uri, rows=rows, row_independent=True, has_proba=True)


def sk_hist_gb(ctx: Context, name: str) -> Entry:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, label = numeric_table(ctx.rng)
    frame.loc[ctx.rng.random(len(frame)) < 0.1, "y"] = np.nan
    model = HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(frame, label)
    trusted = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
    uri = ctx.log("sklearn", model, name, input_example=frame.head(5), skops_trusted_types=trusted)
    rows = [*NUMERIC_ROWS[:3], {"x": 0.3, "y": None, "z": 1.5}]  # null in a double column: NaN
    return Entry(name, "", "columns", uri, rows=rows, row_independent=True, has_proba=True)


# ---- builders: XGBoost and LightGBM -------------------------------------------------------------


def xgb_booster(ctx: Context, name: str) -> Entry:
    import xgboost as xgb

    frame, label = numeric_table(ctx.rng)
    booster = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(frame, label=label), num_boost_round=8)
    uri = ctx.log("xgboost", booster, name, input_example=frame.head(3), pip_requirements=[*PIP, "xgboost"])
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True)


def xgb_classifier(ctx: Context, name: str) -> Entry:
    import xgboost as xgb

    frame, label = numeric_table(ctx.rng)
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(frame, label)
    uri = ctx.log("xgboost", model, name, input_example=frame.head(3), pip_requirements=[*PIP, "xgboost"])
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True, has_proba=True)


def lgbm_booster(ctx: Context, name: str) -> Entry:
    import lightgbm as lgb

    frame, label = numeric_table(ctx.rng)
    params = {"objective": "binary", "num_leaves": 7, "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(frame, label=label), num_boost_round=8)
    uri = ctx.log("lightgbm", booster, name, input_example=frame.head(3), pip_requirements=[*PIP, "lightgbm"])
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True)


def lgbm_classifier(ctx: Context, name: str) -> Entry:
    import lightgbm as lgb

    frame, label = numeric_table(ctx.rng)
    model = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, n_jobs=1, verbose=-1).fit(frame, label)
    uri = ctx.log("lightgbm", model, name, input_example=frame.head(3), pip_requirements=[*PIP, "lightgbm"])
    return Entry(name, "", "columns", uri, rows=NUMERIC_ROWS, row_independent=True, has_proba=True)


def lgbm_category(ctx: Context, name: str) -> Entry:
    import lightgbm as lgb

    frame, label = mixed_table(ctx.rng)
    frame["plan"] = frame["plan"].astype("category")
    model = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, n_jobs=1, verbose=-1, min_child_samples=5)
    model.fit(frame, label)
    uri = ctx.log("lightgbm", model, name, input_example=frame.head(3), pip_requirements=[*PIP, "lightgbm"])
    # MLflow cannot infer a signature from a category column: the model is logged without one.
    return Entry(
        name, "", "none", uri, rows=MIXED_ROWS[:3], row_independent=True, has_proba=True,
        frame_types={"plan": "category"},
    )  # fmt: skip


# ---- builders: custom PythonModels --------------------------------------------------------------


def _pyfunc(ctx: Context, name: str, model: Any, **kwargs: Any) -> str:
    import cloudpickle

    cloudpickle.register_pickle_by_value(pymodels)
    try:
        return ctx.log("pyfunc", None, name, python_model=model, **kwargs)
    finally:
        cloudpickle.unregister_pickle_by_value(pymodels)


def py_every_type(ctx: Context, name: str) -> Entry:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from tests.conformance.pymodels import EveryTypeModel

    columns = [("d", "double"), ("f", "float"), ("l", "long"), ("i", "integer"), ("b", "boolean")]
    columns += [("s", "string"), ("t", "datetime"), ("bin", "binary")]
    schema = Schema(
        [ColSpec(t, c) for c, t in columns]
        + [ColSpec("string", "s_opt", required=False), ColSpec("long", "l_opt", required=False)]
        + [ColSpec("double", "d_opt", required=False)]
    )
    uri = _pyfunc(ctx, name, EveryTypeModel(), signature=ModelSignature(inputs=schema))
    b64 = base64.b64encode
    rows = [
        {"d": 1.5, "f": 0.25, "l": 7, "i": 3, "b": True, "s": "ab", "t": "2024-03-05T10:30:00",
         "bin": b64(b"\x00\x01").decode(), "s_opt": "x", "l_opt": 5, "d_opt": 2.5},
        {"d": -2.0, "f": 1.5, "l": 2**40, "i": -1, "b": False, "s": "ü", "t": "2023-12-31T23:59:59",
         "bin": b64(b"abc").decode(), "s_opt": None, "l_opt": -4, "d_opt": None},
        {"d": 0.0, "f": -0.5, "l": 0, "i": 0, "b": True, "s": "", "t": "2020-02-29T00:00:00",
         "bin": b64(b"").decode(), "s_opt": "y", "l_opt": 9, "d_opt": None},
    ]  # fmt: skip
    return Entry(
        name,
        "",
        "columns",
        uri,
        rows=rows,
        frame_types={"f": "float32", "i": "int32", "t": "datetime", "bin": "bytes"},
    )


def py_optional_long(ctx: Context, name: str) -> Entry:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from tests.conformance.pymodels import OptionalLongModel

    schema = Schema([ColSpec("double", "x"), ColSpec("long", "n", required=False)])
    uri = _pyfunc(ctx, name, OptionalLongModel(), signature=ModelSignature(inputs=schema))
    rows = [{"x": 1.5, "n": 3}, {"x": 2.0, "n": None}, {"x": -1.0, "n": 2**53 + 1}]
    return Entry(name, "", "columns", uri, rows=rows)


def py_array_object(ctx: Context, name: str) -> Entry:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array, Object, Property

    from tests.conformance.pymodels import ArrayObjectModel

    point = Object([Property("x", DataType.double), Property("tag", DataType.string)])
    schema = Schema([ColSpec(Array(DataType.long), "xs"), ColSpec(point, "pt")])
    uri = _pyfunc(ctx, name, ArrayObjectModel(), signature=ModelSignature(inputs=schema))
    rows = [
        {"xs": [1, 2, 3], "pt": {"x": 0.5, "tag": "a"}},
        {"xs": [], "pt": {"x": -1.0, "tag": "b"}},
        {"xs": [10], "pt": {"x": 2.25, "tag": "c"}},
    ]
    return Entry(name, "", "columns", uri, rows=rows, forms=JSON_FORMS)


def _tensor_signature(spec: Any) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema

    return ModelSignature(inputs=Schema(spec if isinstance(spec, list) else [spec]))


def py_tensor_f32(ctx: Context, name: str) -> Entry:
    from mlflow.types import TensorSpec

    from tests.conformance.pymodels import TensorSumModel

    signature = _tensor_signature(TensorSpec(np.dtype("float32"), (-1, 4)))
    uri = _pyfunc(ctx, name, TensorSumModel(), signature=signature)
    tensor = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.5, 3.0], [1e-7, 1e7, -3.0, 0.0]]
    return Entry(name, "", "tensor", uri, tensor=tensor, forms=("instances", "inputs", "dataframe_split"))


def py_tensor_3d(ctx: Context, name: str) -> Entry:
    from mlflow.types import TensorSpec

    from tests.conformance.pymodels import Tensor3DModel

    signature = _tensor_signature(TensorSpec(np.dtype("float32"), (-1, 2, 3)))
    uri = _pyfunc(ctx, name, Tensor3DModel(), signature=signature)
    tensor = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]], [[0.1, 0.2, 0.3], [-1.0, -2.0, -3.0]]]
    return Entry(name, "", "tensor", uri, tensor=tensor, forms=("instances", "inputs"))


def py_named_tensors(ctx: Context, name: str) -> Entry:
    from mlflow.types import TensorSpec

    from tests.conformance.pymodels import NamedTensorsModel

    spec = [TensorSpec(np.dtype("float64"), (-1, 2), "a"), TensorSpec(np.dtype("int64"), (-1,), "b")]
    uri = _pyfunc(ctx, name, NamedTensorsModel(), signature=_tensor_signature(spec))
    tensor = {"a": [[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], "b": [3, 4, -2]}
    return Entry(name, "", "tensors", uri, tensor=tensor, forms=("instances", "inputs"))


def py_int_tensor(ctx: Context, name: str) -> Entry:
    from mlflow.types import TensorSpec

    from tests.conformance.pymodels import IntTensorModel

    signature = _tensor_signature(TensorSpec(np.dtype("int32"), (-1, 3)))
    uri = _pyfunc(ctx, name, IntTensorModel(), signature=signature)
    tensor = [[1, 2, 3], [-4, 0, 2**20], [7, 8, 9]]
    return Entry(name, "", "tensor", uri, tensor=tensor, forms=("instances", "inputs"))


def _xy_entry(ctx: Context, name: str, model: Any, **kwargs: Any) -> Entry:
    frame, _ = numeric_table(ctx.rng, 20)
    example = frame[["x", "y"]].head(3)
    uri = _pyfunc(ctx, name, model, input_example=example, **kwargs)
    rows = [{"x": r["x"], "y": r["y"]} for r in NUMERIC_ROWS]
    return Entry(name, "", "columns", uri, rows=rows)


def py_frame_output(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import FrameOutputModel

    return _xy_entry(ctx, name, FrameOutputModel())


def py_dict_output(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import DictOutputModel

    return _xy_entry(ctx, name, DictOutputModel())


def py_list_output(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import ListOutputModel

    return _xy_entry(ctx, name, ListOutputModel())


def py_nan_output(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import NanOutputModel

    uri = _pyfunc(ctx, name, NanOutputModel(), input_example=pd.DataFrame({"x": [1.0, 4.0]}))
    return Entry(name, "", "columns", uri, rows=[{"x": 4.0}, {"x": -1.0}, {"x": 0.0}])


def py_string_output(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import StringOutputModel

    example = pd.DataFrame({"x": [0.5, 1.0], "word": ["a", "b"]})
    uri = _pyfunc(ctx, name, StringOutputModel(), input_example=example)
    rows = [{"x": 0.125, "word": "alpha"}, {"x": -3.5, "word": "β"}, {"x": 1e6, "word": ""}]
    return Entry(name, "", "columns", uri, rows=rows)


def py_params(ctx: Context, name: str) -> Entry:
    from mlflow.models import infer_signature

    from tests.conformance.pymodels import ParamsModel

    example = pd.DataFrame({"x": [0.5, 1.0], "y": [0.0, -1.0]})
    defaults = {"threshold": 0.5, "k": 1, "label": "pos", "flag": False, "weights": [1.0, 1.0]}
    output = ParamsModel().predict(None, example, defaults)
    signature = infer_signature(example, output, params=defaults)
    uri = _pyfunc(ctx, name, ParamsModel(), signature=signature)
    rows = [{"x": 0.5, "y": 0.25}, {"x": -1.0, "y": 2.0}, {"x": 0.1, "y": 0.1}]
    params = {"threshold": 0.2, "k": 3, "label": "yes", "weights": [2.0, -0.5]}
    return Entry(name, "", "columns", uri, rows=rows, params=params)


def py_raising(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import RaisingModel

    uri = _pyfunc(ctx, name, RaisingModel(), input_example=pd.DataFrame({"x": [1.0, 2.0]}))
    rows = [{"x": 1.5}, {"x": 0.0}, {"x": 3.0}]
    return Entry(name, "", "columns", uri, rows=rows, bad_rows=[{"x": 2.0}, {"x": -1.0}])


def py_untyped(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import UntypedModel

    uri = _pyfunc(ctx, name, UntypedModel())
    rows = [{"a": 1, "b": 2.5, "c": "x"}, {"a": -3, "b": 0.5, "c": "y"}]
    return Entry(name, "", "none", uri, rows=rows)


def py_pydantic_hint(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import Message, PydanticHintModel

    example = [Message(role="user", content="hi", weight=0.5)]
    uri = _pyfunc(ctx, name, PydanticHintModel(), input_example=example)
    rows = [
        {"role": "user", "content": "hello", "weight": 1.5},
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "x", "weight": None},
    ]
    return Entry(name, "", "type-hint", uri, rows=rows, forms=("inputs",))


def py_dict_hint(ctx: Context, name: str) -> Entry:
    from tests.conformance.pymodels import DictHintModel

    uri = _pyfunc(ctx, name, DictHintModel(), input_example=[{"a": "1", "b": "2"}])
    rows = [{"a": "x", "b": "y"}, {"k": "v"}, {"z": "", "a": "ü"}]
    return Entry(name, "", "type-hint", uri, rows=rows, forms=("inputs",))


MODEL_CODE = '''
"""A model from code: logged as this file, not as a pickle."""
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class CodeModel(PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return (model_input["x"] * 10 - model_input["y"]).to_numpy()


mlflow.models.set_model(CodeModel())
'''


def py_from_code(ctx: Context, name: str) -> Entry:
    path = ctx.root / "code_model.py"
    path.write_text(textwrap.dedent(MODEL_CODE))
    example = pd.DataFrame({"x": [0.5, 1.0], "y": [0.25, -1.0]})
    uri = ctx.log("pyfunc", None, name, python_model=str(path), input_example=example)
    rows = [{"x": r["x"], "y": r["y"]} for r in NUMERIC_ROWS]
    return Entry(name, "", "columns", uri, rows=rows)


SPECS: list[Spec] = [
    Spec(
        "sk-classifier", "scikit-learn LogisticRegression, 3 double columns (alias @champion)", sk_classifier
    ),
    Spec("sk-regressor", "scikit-learn RandomForestRegressor (skops trusted Tree)", sk_regressor),
    Spec("sk-pipeline", "Pipeline(ColumnTransformer(numeric + one-hot), RandomForest)", sk_pipeline),
    Spec("sk-pipeline-nosig", "the ColumnTransformer pipeline logged without a signature", sk_pipeline_nosig),
    Spec("sk-multioutput", "MultiOutputClassifier(LogisticRegression), 2 targets", sk_multioutput),
    Spec(
        "sk-predict-proba",
        "LogisticRegression logged with pyfunc_predict_fn='predict_proba'",
        sk_predict_proba,
    ),
    Spec("sk-optional-string", "pipeline with an optional string column, imputed", sk_optional_string),
    Spec("sk-histgb", "HistGradientBoostingClassifier, a null in a double column", sk_hist_gb),
    Spec("xgb-booster", "XGBoost native Booster", xgb_booster),
    Spec("xgb-classifier", "XGBoost XGBClassifier", xgb_classifier),
    Spec("lgbm-booster", "LightGBM native Booster", lgbm_booster),
    Spec("lgbm-classifier", "LightGBM LGBMClassifier", lgbm_classifier),
    Spec("lgbm-category", "LGBMClassifier trained on a pandas category column", lgbm_category),
    Spec(
        "py-every-type",
        "pyfunc: double/float/long/integer/boolean/string/datetime/binary + optionals",
        py_every_type,
    ),
    Spec("py-optional-long", "pyfunc: an optional long column", py_optional_long),
    Spec("py-array-object", "pyfunc: Array(long) and Object columns", py_array_object),
    Spec("py-tensor-f32", "pyfunc: float32 tensor (-1, 4), numpy style", py_tensor_f32),
    Spec("py-tensor-3d", "pyfunc: float32 tensor (-1, 2, 3)", py_tensor_3d),
    Spec(
        "py-named-tensors", "pyfunc: dict of named tensors a (-1, 2) float64, b (-1,) int64", py_named_tensors
    ),
    Spec("py-int-tensor", "pyfunc: int32 tensor (-1, 3)", py_int_tensor),
    Spec("py-frame-output", "pyfunc returning a DataFrame with named columns", py_frame_output),
    Spec("py-dict-output", "pyfunc returning a dict of lists", py_dict_output),
    Spec("py-nan-output", "pyfunc returning NaN and +-Infinity", py_nan_output),
    Spec("py-string-output", "pyfunc returning strings", py_string_output),
    Spec("py-list-output", "pyfunc returning a Python list", py_list_output),
    Spec("py-params", "pyfunc with a ParamSchema (double, long, string, boolean, list of double)", py_params),
    Spec("py-raising", "pyfunc whose predict raises on a negative x", py_raising),
    Spec("py-untyped", "PythonModel without type hints or signature", py_untyped),
    Spec(
        "py-pydantic-hint", "PythonModel with type hints: list[pydantic model] -> list[str]", py_pydantic_hint
    ),
    Spec("py-dict-hint", "PythonModel with type hints: list[dict[str, str]] -> list[str]", py_dict_hint),
    Spec("py-from-code", "model from code (python_model='code_model.py')", py_from_code),
]


@dataclass(frozen=True)
class Zoo:
    """The registered zoo: its registry and its entries by name (in SPECS order)."""

    tracking_uri: str
    root: Path
    entries: dict[str, Entry]
    failures: dict[str, str]
    """Specs whose builder failed: name -> 'ExceptionType: first line'."""


def build_zoo(root: Path, names: list[str] | None = None, seed: int = 0) -> Zoo:
    """Train, log and register the zoo (or only `names`) in a new sqlite registry under `root`."""
    import dataclasses

    from model_api.registry import mlflow_uris

    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    entries: dict[str, Entry] = {}
    failures: dict[str, str] = {}
    with mlflow_uris(tracking_uri):
        import mlflow

        artifacts = root / "artifacts"
        artifacts.mkdir(exist_ok=True)
        mlflow.set_experiment(experiment_id=mlflow.create_experiment("zoo", artifacts.resolve().as_uri()))
        for i, spec in enumerate(SPECS):
            if names is not None and spec.name not in names:
                continue
            ctx = Context(tracking_uri, root, np.random.default_rng(seed + i))
            try:
                entry = spec.build(ctx, spec.name)
            except Exception as exc:
                failures[spec.name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                continue
            entries[spec.name] = dataclasses.replace(entry, kind=spec.kind, tracking_uri=tracking_uri)
    return Zoo(tracking_uri, root, entries, failures)


if __name__ == "__main__":  # python -m tests.conformance.zoo /tmp/zoo: build it and print the table
    import time

    started = time.monotonic()
    zoo = build_zoo(Path(sys.argv[1]))
    for entry in zoo.entries.values():
        flags = f"{entry.row_independent!s:6} {entry.has_proba!s:6}"
        print(f"{entry.name:20} {entry.signature:10} {flags} {entry.uri}")
    for name, why in zoo.failures.items():
        print(f"FAILED {name}: {why}")
    print(f"{len(zoo.entries)} entries in {time.monotonic() - started:.1f}s")
