"""The loaded model behind a bounded thread pool: model work never runs on the event loop, except
the compiled fast path (`fastserve.py`) on small batches, which costs less than the hand-off.

Two paths (see `inputs.py`): on the contract path the raw scikit-learn estimator predicts a
merged batch of checked rows; on the pyfunc path MLflow's pyfunc model predicts one request's
parsed input with its params, enforcing the signature itself. Either way the answer is what
`mlflow.pyfunc.load_model(uri).predict(...)` gives for the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_api.admission import Ticket
from model_api.contract import Batch
from model_api.dtypes import (
    holds_missing,
    lightgbm_categories,
    optional_integers,
    predict_relaxed,
    restore_categories,
)
from model_api.errors import InvalidInput, PredictionFailed, describe_error
from model_api.fastpath import FastPath
from model_api.fastpath.preprocess import Fallback
from model_api.fastserve import INLINE_MAX_ROWS
from model_api.inputs import ModelInput, ModelSpec, PyfuncBatch
from model_api.metrics import Metrics
from model_api.registry import LoadedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """What the model said for a batch: one label per row and, when asked, class probabilities
    (float64, [rows, classes] in the order of `Predictor.classes`), kept as an array until the
    protocol that renders them."""

    labels: list[Any]
    """The answer as MLflow renders it in JSON: one value per row on the contract path; on the
    pyfunc path whatever the model returned (a list, records of a DataFrame, a dict...)."""
    probabilities: np.ndarray | None = None
    output: Any = None
    """The pyfunc model's own output (ndarray, Series, DataFrame, dict, list, str), for protocols
    that render by type (V2); None on the contract path, where `labels` says it all."""

    def slice(self, start: int, stop: int) -> Prediction:
        probabilities = self.probabilities[start:stop] if self.probabilities is not None else None
        return Prediction(self.labels[start:stop], probabilities)


def jsonable(output: Any) -> Any:
    """A model's output as MLflow's scoring server puts it in JSON (DataFrames as records)."""
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    return _get_jsonable_obj(output, pandas_orient="records")  # type: ignore[no-untyped-call]


class Predictor:
    """Runs predictions for one loaded model on a bounded pool of model threads."""

    def __init__(self, loaded: LoadedModel, spec: ModelSpec, *, threads: int, metrics: Metrics) -> None:
        self.loaded = loaded
        self.spec = spec
        self.schema = spec.contract
        """Our contract, on the contract path; None on the pyfunc path."""
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        model = loaded.model
        classes = getattr(model, "classes_", None)
        # A multi-output classifier has one array of classes per output: no class probabilities.
        self.classes: list[Any] = []
        if isinstance(classes, np.ndarray) and classes.ndim == 1:
            self.classes = [c.item() if isinstance(c, np.generic) else c for c in classes]
        self.has_probabilities = (
            loaded.flavor in PROBABILITY_FLAVORS and hasattr(model, "predict_proba") and bool(self.classes)
        )
        """Class probabilities are offered for single-output classifiers of these flavors."""
        self._categories = lightgbm_categories(model) if loaded.flavor == "lightgbm" else {}
        self._relaxed = spec.relaxed_schema
        self._optional_integers = optional_integers(spec.input_schema)
        self._latency = metrics.model_latency.labels(loaded.name, loaded.version or "")
        self._labels_from_proba = self.has_probabilities and _predicts_argmax_of_proba(model)
        self.merges_rows = self.schema is not None and rows_are_exact_alone(model)
        """Whether rows of concurrent requests may share a model call: only where each row's
        answer is computed by itself (trees), the same bits alone or merged. Linear models go
        through BLAS, whose kernels differ by row count (a last-bit change), so they run alone."""
        self.fast: FastPath | None = None
        """The compiled fast path, when it was checked identical to the model (`attach_fast_path`)."""
        self.fast_reason = "not built"
        """What the fast path is and how it was checked, or why the model serves without one."""

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str | None:
        return self.loaded.version

    def predict_sync(self, batch: ModelInput, probabilities: bool) -> Prediction:
        """Run the model on one batch in the calling thread; raises PredictionFailed (500) when the
        model raises, and InvalidInput (422) when MLflow's signature enforcement refuses the input."""
        if isinstance(batch, PyfuncBatch):
            return self._predict_pyfunc(batch, probabilities)
        assert self.schema is not None
        if (fast := self.predict_fast(batch, probabilities, max_rows=batch.n_rows)) is not None:
            return fast
        features = self.schema.to_model_input(batch)
        started = time.perf_counter()
        model = self.loaded.model
        try:
            if probabilities and self._labels_from_proba:
                # One pass instead of two: this model's predict is the argmax of predict_proba.
                proba = model.predict_proba(features)
                raw = np.asarray(model.classes_).take(np.argmax(proba, axis=1))
            else:
                raw = model.predict(features)
                proba = model.predict_proba(features) if probabilities else None
        except Exception as exc:
            raise PredictionFailed("the model failed on this request; quote the request id") from exc
        finally:
            self._latency.observe(time.perf_counter() - started)
        labels = as_list(raw)
        if len(labels) != batch.n_rows:
            raise PredictionFailed("the model returned a different number of rows than it was given")
        return Prediction(labels, None if proba is None else np.asarray(proba, dtype=np.float64))

    def predict_fast(
        self, batch: ModelInput, probabilities: bool, max_rows: int = INLINE_MAX_ROWS
    ) -> Prediction | None:
        """The fast path's answer for `batch`, computed in the calling thread; None where the model
        must answer instead: no fast path, the pyfunc path, more than `max_rows` rows, probabilities
        it cannot give, or rows the model would refuse (its own error then comes from the model)."""
        fast = self.fast
        if (
            fast is None
            or not isinstance(batch, Batch)
            or batch.n_rows > max_rows
            or (probabilities and not fast.has_probabilities)
        ):
            return None
        started = time.perf_counter()
        try:
            labels, proba = fast.evaluate(batch.columns, probabilities)
        except Fallback:
            fast.fallbacks += 1
            return None
        except Exception:  # a defect here must not fail a request the model can answer
            logger.exception("the fast path failed on a batch; the model answers it")
            return None
        self._latency.observe(time.perf_counter() - started)
        if len(labels) != batch.n_rows:
            return None
        return Prediction(as_list(labels), None if proba is None else np.asarray(proba, dtype=np.float64))

    def _predict_pyfunc(self, batch: PyfuncBatch, probabilities: bool) -> Prediction:
        from mlflow.exceptions import MlflowException

        started = time.perf_counter()
        try:
            data = restore_categories(batch.data, self._categories)
            if self._relaxed is not None and holds_missing(data, self._optional_integers):
                # An optional integer column holding a missing value: MLflow refuses it (dtypes.py).
                output = predict_relaxed(self.loaded.pyfunc, data, batch.params, self._relaxed)
            else:
                output = self.loaded.pyfunc.predict(data, params=batch.params)
            proba = None
            if probabilities:
                if self.spec.input_schema is not None:
                    from mlflow.models.utils import _enforce_schema

                    data = _enforce_schema(data, self.spec.input_schema)
                proba = np.asarray(self.loaded.model.predict_proba(data), dtype=np.float64)
        except MlflowException as exc:
            if exc.error_code == "INVALID_PARAMETER_VALUE" or "enforce schema" in exc.message:
                raise InvalidInput(
                    "the input does not fit the model's signature as MLflow enforces it; "
                    "see the model's signature at /model/info"
                ) from exc
            raise PredictionFailed("the model failed on this request; quote the request id") from exc
        except Exception as exc:
            raise PredictionFailed("the model failed on this request; quote the request id") from exc
        finally:
            self._latency.observe(time.perf_counter() - started)
        return Prediction(jsonable(output), proba, output)

    async def predict(
        self, batch: ModelInput, probabilities: bool, *, ticket: Ticket | None = None
    ) -> Prediction:
        """Run the model on a batch in a model thread, leaving the event loop free (a small batch
        the fast path answers is answered here, on the loop: it costs less than the hand-off).
        With a `ticket`, a request whose deadline passed while it waited for a thread raises
        Expired uncomputed."""
        if (fast := self.predict_fast(batch, probabilities)) is not None:
            if ticket is not None:
                ticket.start()  # answered at once: it never waited
            return fast
        loop = asyncio.get_running_loop()
        if ticket is None:
            return await loop.run_in_executor(self._executor, self.predict_sync, batch, probabilities)
        return await loop.run_in_executor(self._executor, self._predict_in_turn, ticket, batch, probabilities)

    def _predict_in_turn(self, ticket: Ticket, batch: ModelInput, probabilities: bool) -> Prediction:
        if not ticket.start():
            raise ticket.expired_error()
        return self.predict_sync(batch, probabilities)

    def warm(self) -> str | None:
        """One prediction on a valid input, so the first request pays no first-call cost: the input
        example, or a row built from the contract. Returns why the model could not be warmed (no
        input to warm it with, or the model's own error, redacted), or None when it was."""
        try:
            if self.schema is not None:
                example = [dict(r) for r in self.schema.example] or [self.schema.placeholder_row()]
                batch: ModelInput = self.schema.parse_records(example, max_rows=len(example))
            elif self.loaded.example is not None:
                batch = PyfuncBatch(self.loaded.example, None, 1)
            else:
                return "the model has no input example to warm it with"
            self.predict_sync(batch, self.has_probabilities and self.schema is not None)
        except Exception as exc:
            cause = exc.__cause__ or exc
            return f"its warm-up prediction failed: {describe_error(cause)}"
        return None

    async def drain(self) -> None:
        """Wait for queued work to be answered; a plain predictor queues nothing."""

    def close(self) -> None:
        """Let running predictions finish, then stop the model threads."""
        self._executor.shutdown(wait=True)


PROBABILITY_FLAVORS = frozenset({"sklearn", "xgboost", "lightgbm"})


def as_list(raw: Any) -> list[Any]:
    if hasattr(raw, "to_numpy"):  # pandas Series or DataFrame from a pyfunc model
        raw = raw.to_numpy()
    array = np.asarray(raw)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return list(array.tolist())


def _final_step(model: Any) -> Any:
    """The model itself, or a pipeline's last step."""
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def rows_are_exact_alone(model: Any) -> bool:
    """Whether the model (or a pipeline's final step) is a tree model, whose answer for a row
    never depends on the other rows of its call."""
    from sklearn import ensemble
    from sklearn.tree import BaseDecisionTree

    final = _final_step(model)
    boosted = (
        ensemble.GradientBoostingClassifier,
        ensemble.GradientBoostingRegressor,
        ensemble.HistGradientBoostingClassifier,
        ensemble.HistGradientBoostingRegressor,
    )
    # Forests and extra trees: ensembles of decision trees (bagging of other estimators is not).
    forest = isinstance(final, ensemble.BaseEnsemble) and isinstance(
        getattr(final, "estimator", None), BaseDecisionTree
    )
    return forest or isinstance(final, (BaseDecisionTree, *boosted))


def _predicts_argmax_of_proba(model: Any) -> bool:
    """Whether `predict` is exactly classes_[argmax(predict_proba)] (trees and forests, single output)."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    final = _final_step(model)
    kinds = (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)
    return isinstance(final, kinds) and getattr(final, "n_outputs_", 1) == 1
