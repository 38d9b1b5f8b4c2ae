"""The compiled fast path for one model: request columns in, the model's own answers out.

`FastPath.predict(columns, n_rows, probabilities)` turns validated request columns into numpy
arrays (no DataFrame), runs the compiled preprocessing and a tree evaluator, and returns what the
model returns. A request the model would refuse (an unknown category under
handle_unknown='error', a NaN the trees do not take, a value that overflows float32 after scaling,
an integer beyond 2**53) is handed to the model itself, which raises its own error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_api.fastpath.preprocess import Fallback, Step
from model_api.fastpath.trees import Evaluator

ToFrame = Callable[[Mapping[str, list[Any]]], Any]
Answer = Callable[[Any, bool], tuple[np.ndarray, np.ndarray | None]]
_EXACT_INT = 2**53


def reference(model: Any) -> Answer:
    """What the model itself answers for a frame: (labels, probabilities when asked)."""
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if kind == "xgboost.core.Booster":
        return lambda frame, probabilities: (np.asarray(model.inplace_predict(frame)), None)
    if kind == "lightgbm.basic.Booster":
        return lambda frame, probabilities: (np.asarray(model.predict(frame)), None)

    def answer(frame: Any, probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        labels = np.asarray(model.predict(frame))
        return labels, np.asarray(model.predict_proba(frame)) if probabilities else None

    return answer


@dataclass(frozen=True)
class ColumnSpec:
    """A request column: its signature name and MLflow ColSpec type."""

    name: str
    kind: str  # "double" | "float" | "long" | "integer" | "boolean" | "string"


class FastPath:
    """Compiled inference for one model: `predict(columns, n_rows, probabilities)`.

    columns: validated request columns by signature name, Python lists (numbers as int/float,
    a missing number or string as float('nan'), booleans as bool, strings as str).
    Returns labels (1-D, the model's values and dtype) and, when asked, probabilities
    [n_rows, n_classes] with the model's dtype and bits. Raises what the model raises.
    """

    def __init__(
        self,
        model: Any,
        to_frame: ToFrame,
        names: Sequence[str],
        dtypes: Sequence[np.dtype[Any]],
        prep: Step,
        evaluator: Evaluator,
        limits: tuple[bool, bool],
        description: str,
    ) -> None:
        self.model, self.to_frame = model, to_frame
        self._answer = reference(model)
        self._columns = list(zip(names, dtypes, strict=True))
        self._int_columns = [j for j, dtype in enumerate(dtypes) if np.dtype(dtype).kind == "i"]
        self._prep, self._evaluator = prep, evaluator
        self._nan_ok, self._inf_ok = limits
        self.description = description
        self.has_probabilities = evaluator.has_probabilities
        self.fallbacks = 0
        """Requests handed to the model (each raised, or answered, as the model does)."""

    def dtype(self, name: str) -> np.dtype[Any]:
        """The dtype the server's conversion gives this column."""
        return dict(self._columns)[name]

    def evaluate(
        self, columns: Mapping[str, Sequence[Any]], probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The fast path alone; raises Fallback where the model must answer."""
        X = self.matrix(columns)
        with np.errstate(over="ignore", invalid="ignore"):
            seen = X.astype(np.float32) if self._evaluator.float32 else X
        if not self._nan_ok and np.isnan(seen).any():
            raise Fallback("NaN reaches trees that refuse it")
        if not self._inf_ok and np.isinf(seen).any():
            raise Fallback("an infinite value reaches trees that refuse it")
        return self._evaluator.run(X, probabilities)

    def matrix(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """The rows as the evaluator receives them: [n_rows, n_features] float64, preprocessed (a
        row's values depend on that row alone). Raises Fallback where the model must answer: an
        integer beyond 2**53, or what the preprocessing declines (an unknown category under
        handle_unknown='error', a missing value MissingIndicator was not fitted on)."""
        raw = [np.asarray(columns[name], dtype=dtype) for name, dtype in self._columns]
        ints = [raw[j] for j in self._int_columns]
        if ints:
            # float64 holds integers exactly only up to 2**53; beyond, numpy and pandas may round
            # through different types: the model answers these. One check for all the integer
            # columns (four of them, one row: 19 -> 6 us).
            whole = ints[0] if len(ints) == 1 else np.concatenate(ints)
            if whole.max() > _EXACT_INT or whole.min() < -_EXACT_INT:
                raise Fallback("an integer beyond 2**53")
        cols = self._prep.run(raw)
        X = np.empty((len(raw[0]), len(cols)), dtype=np.float64)
        for j, c in enumerate(cols):
            X[:, j] = c
        return X

    def predict(
        self, columns: Mapping[str, Sequence[Any]], n_rows: int, probabilities: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            return self.evaluate(columns, probabilities)
        except Fallback:
            self.fallbacks += 1
            frame = self.to_frame({k: list(v) for k, v in columns.items()})
            return self._answer(frame, probabilities)
