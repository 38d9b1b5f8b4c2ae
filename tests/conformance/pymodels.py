"""The custom `mlflow.pyfunc.PythonModel`s of the conformance zoo.

Only the type-hinted models annotate `predict`: MLflow 3 reads any annotation on `model_input`
as a type-hint signature (and warns when it is not a `list[...]`).

They are pickled by value (cloudpickle) when logged, so a `mlflow models serve` process loads them
without this package on its path. Each one answers something that shows what reached it: its
output is a function of the input as the model saw it (dtypes, missing values, shapes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pydantic
from mlflow.pyfunc import PythonModel


def _kind(value: Any) -> str:
    """How a cell reached the model: 'NoneType', 'float' (NaN), 'int', 'Timestamp', ..."""
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return type(value).__name__


class EveryTypeModel(PythonModel):
    """Columns of every MLflow type in; per row, what each column held as the model saw it."""

    def predict(self, context, model_input, params=None):
        frame = model_input
        return pd.DataFrame(
            {
                "num": frame["d"].astype("float64")
                + frame["f"].astype("float64")
                + frame["l"].astype("float64")
                + frame["i"].astype("float64"),
                "flag": frame["b"].map(bool),
                "text": frame["s"].map(lambda s: s.upper()),
                "day": frame["t"].map(lambda t: pd.Timestamp(t).isoformat()),
                "nbytes": frame["bin"].map(len),
                "s_opt": frame["s_opt"].map(_kind),
                "l_opt": frame["l_opt"].map(_kind),
                "d_opt": frame["d_opt"].map(_kind),
                "dtypes": ";".join(f"{c}:{t}" for c, t in frame.dtypes.items()),
            }
        )


class OptionalLongModel(PythonModel):
    """An optional long column `n` and a double `x`: answers x * 2 + n, or -1 where n is missing."""

    def predict(self, context, model_input, params=None):
        n = model_input["n"]
        out = model_input["x"] * 2 + n.astype("float64")
        return out.where(n.notna(), -1.0).to_numpy()


class ArrayObjectModel(PythonModel):
    """An Array(long) column `xs` and an Object column `pt` {x: double, tag: string}."""

    def predict(self, context, model_input, params=None):
        sums = [
            float(sum(xs)) + float(pt["x"])
            for xs, pt in zip(model_input["xs"], model_input["pt"], strict=True)
        ]
        tags = [f"{pt['tag']}:{len(xs)}" for xs, pt in zip(model_input["xs"], model_input["pt"], strict=True)]
        return pd.DataFrame({"total": sums, "tag": tags})


class TensorSumModel(PythonModel):
    """A float32 tensor (-1, 4) in; per row its sum and the dtype it arrived as."""

    def predict(self, context, model_input, params=None):
        array = np.asarray(model_input)
        return array.reshape(array.shape[0], -1).sum(axis=1) * np.float32(1.5)


class Tensor3DModel(PythonModel):
    """A float32 tensor (-1, 2, 3) in; per row the sums over its last axis, shape (-1, 2)."""

    def predict(self, context, model_input, params=None):
        array = np.asarray(model_input)
        assert array.ndim == 3, f"expected a 3-D tensor, got shape {array.shape}"
        return array.sum(axis=2)


class NamedTensorsModel(PythonModel):
    """A dict of tensors, a: float64 (-1, 2) and b: int64 (-1,), in; per row a[0] * b + a[1]."""

    def predict(self, context, model_input, params=None):
        a = np.asarray(model_input["a"])
        b = np.asarray(model_input["b"])
        return a[:, 0] * b + a[:, 1]


class IntTensorModel(PythonModel):
    """An int32 tensor (-1, 3) in; the tensor doubled, as int32."""

    def predict(self, context, model_input, params=None):
        array = np.asarray(model_input)
        return (array * 2).astype(np.int32)


class FrameOutputModel(PythonModel):
    """Columns x, y in; a DataFrame with named columns score (double), label (string), rank (long)."""

    def predict(self, context, model_input, params=None):
        score = model_input["x"] * 0.25 + model_input["y"]
        return pd.DataFrame(
            {
                "score": score,
                "label": np.where(score > 0.5, "high", "low"),
                "rank": (score * 10).round().astype("int64"),
            }
        )


class NanOutputModel(PythonModel):
    """Column x in; per row [sqrt(x) (NaN when x < 0), 1 / x (+-inf at 0)]: non-finite outputs."""

    def predict(self, context, model_input, params=None):
        x = model_input["x"].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.stack([np.sqrt(x), 1.0 / x], axis=1)


class DictOutputModel(PythonModel):
    """Columns x, y in; a dict of lists {'sum': [...], 'max': [...]}."""

    def predict(self, context, model_input, params=None):
        return {
            "sum": (model_input["x"] + model_input["y"]).tolist(),
            "max": np.maximum(model_input["x"], model_input["y"]).tolist(),
        }


class StringOutputModel(PythonModel):
    """Columns x, word in; a numpy array of strings."""

    def predict(self, context, model_input, params=None):
        return np.array([f"{w}-{x:.3f}" for x, w in zip(model_input["x"], model_input["word"], strict=True)])


class ListOutputModel(PythonModel):
    """Columns x, y in; a plain Python list of floats."""

    def predict(self, context, model_input, params=None):
        return [float(x) * 3 - float(y) for x, y in zip(model_input["x"], model_input["y"], strict=True)]


class ParamsModel(PythonModel):
    """Columns x, y and params (threshold, k, label, flag, weights); a DataFrame of score and label."""

    def predict(self, context, model_input, params=None):
        p = params or {}
        weights = list(p.get("weights", [1.0, 1.0]))
        score = (model_input["x"] * weights[0] + model_input["y"] * weights[1]) * p.get("k", 1)
        if p.get("flag", False):
            score = -score
        label = np.where(score > p.get("threshold", 0.5), p.get("label", "pos"), "neg")
        return pd.DataFrame({"score": score, "label": label})


class RaisingModel(PythonModel):
    """Column x in; x squared, and a ValueError when any x is negative."""

    def predict(self, context, model_input, params=None):
        x = model_input["x"]
        if (x < 0).any():
            raise ValueError(f"negative x is not allowed: {x[x < 0].tolist()}")
        return (x * x).to_numpy()


class UntypedModel(PythonModel):
    """No type hints and no signature: whatever arrives, answers one number per row."""

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        return frame.select_dtypes("number").sum(axis=1).to_numpy()


class Message(pydantic.BaseModel):
    """One chat-like message: the pydantic type of the type-hinted model."""

    role: str
    content: str
    weight: float | None = None


class PydanticHintModel(PythonModel):
    """Type hints: `list[Message]` in, `list[str]` out (MLflow 3 infers the signature from them)."""

    def predict(self, model_input: list[Message], params: dict[str, Any] | None = None) -> list[str]:
        return [f"{m.role}:{m.content.upper()}:{m.weight}" for m in model_input]


class DictHintModel(PythonModel):
    """Type hints: `list[dict[str, str]]` in, `list[str]` out."""

    def predict(self, model_input: list[dict[str, str]], params: dict[str, Any] | None = None) -> list[str]:
        return [",".join(f"{k}={v}" for k, v in sorted(row.items())) for row in model_input]
