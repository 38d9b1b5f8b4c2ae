"""Watching the served model in production: what each answered request leaves behind.

The data plane hands every answered request (its `Admission`, which holds the request's body,
rendered answer, rows and prediction) to `Watch.answered` once, as the request leaves the data
plane. From there (the metrics of the requests answered in one turn of the event loop are counted
together, at its next turn):

- prediction metrics: `predicted_class_total` (by class, for a classifier), a histogram of the
  positive-class probability `positive_class_probability` (binary classifiers, when the request's
  answer carried probabilities) or of the output `predicted_value` (regressors);
- feature metrics: `feature_values_flagged_total` by feature and kind (missing, unknown,
  out_of_range) against the model's reference profile (`profile.py`), computed when the model is
  served from MODEL_API_REFERENCE_PROFILE or else the input example;
- an inference log record (`inference_log/`), for a sampled request only, built and written by
  the log's own thread from the few values the request path hands it (`inference_record.py`);
- a shadow challenger's sample (`shadow.py`), scored in the shadow's own thread.

Prediction and feature metrics are computed on the contract path only, where the rows are checked
columns and the labels are one value a row; the pyfunc path (any model MLflow loads, its output of
any shape) gets the inference log and the shadow only. Labels are bounded: model name and version,
the model's own classes (at most MAX_CLASSES, beyond that "other") and its signature's features.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from model_api.contract import Batch
from model_api.inference_log import InferenceLog, build_inference_log
from model_api.inference_record import answer_of, build_record
from model_api.metrics import Metrics, observe_all
from model_api.predictor import Prediction, Predictor
from model_api.profile import Profile, build_profile, observe
from model_api.settings import Settings

if TYPE_CHECKING:
    from model_api.dataplane import Admission
    from model_api.shadow import Shadow

logger = logging.getLogger(__name__)

MAX_CLASSES = 50
"""Classes counted by name; a model with more counts the rest as "other" (labels stay bounded)."""
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
KINDS = ("missing", "unknown", "out_of_range")
COUNT_FIRST_ROWS = 8
"""From this many rows, a batch's predicted classes are counted first and each class's counter is
incremented once (a counter's increment takes a lock: ~1 us; counting costs ~3 us)."""


class PredictionMetrics:
    """The prediction and feature metrics, in the app's registry (names in the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        model = ["model_name", "model_version"]
        self.classes = Counter(
            "predicted_class",
            "Rows predicted, by model and predicted class (classifiers on the contract path).",
            [*model, "predicted_class"],
            registry=registry,
        )
        self.probability = Histogram(
            "positive_class_probability",
            "Probability of the positive class per row (binary classifiers, answers with probabilities).",
            model,
            buckets=PROBABILITY_BUCKETS,
            registry=registry,
        )
        self.value = Histogram(
            "predicted_value",
            "The predicted value per row (regressors on the contract path).",
            model,
            registry=registry,
        )
        self.features = Counter(
            "feature_values_flagged",
            "Input values per feature that are missing, an unknown category or out of the "
            "reference profile's range (kind), by model.",
            [*model, "feature", "kind"],
            registry=registry,
        )


class ModelWatch:
    """One served model's reference profile and its metric children, made once when it is served."""

    def __init__(self, predictor: Predictor, metrics: PredictionMetrics, profile: Profile | None) -> None:
        labels = predictor.name, predictor.version or ""
        self.predictor = weakref.ref(predictor)
        """The model watched (weakly: a model rolled out must not live on in its watch)."""
        self.profile = profile
        classes = predictor.classes
        self.is_classifier = bool(classes)
        self.class_counts = {c: metrics.classes.labels(*labels, str(c)) for c in classes[:MAX_CLASSES]}
        self.other_class = metrics.classes.labels(*labels, "other")
        binary = predictor.has_probabilities and len(classes) == 2
        self.probability = metrics.probability.labels(*labels) if binary else None
        self.value = None if self.is_classifier else metrics.value.labels(*labels)
        self.features = {
            (name, kind): metrics.features.labels(*labels, name, kind)
            for name in (profile.features if profile else ())
            for kind in KINDS
        }
        self._ranges = [(n, low, high) for n, (low, high) in profile.numeric.items()] if profile else []
        self._known = list(profile.categorical.items()) if profile else []

    def _clean_row(self, columns: dict[str, list[Any]]) -> bool:
        """Whether a single row has nothing to count: the common case, checked in a few
        comparisons (None, NaN, text or a bool fail them and take `observe`'s full count)."""
        try:
            for name, low, high in self._ranges:
                value = columns[name][0]
                if not low <= value <= high or type(value) is bool:
                    return False
            return all(columns[name][0] in known for name, known in self._known)
        except (KeyError, IndexError, TypeError):
            return False

    def observe(self, batch: Batch, prediction: Prediction) -> None:
        """Count one answered batch: its predicted classes or values, and its flagged features."""
        labels = prediction.labels
        if self.is_classifier:
            if len(labels) < COUNT_FIRST_ROWS:
                for label in labels:
                    self.class_counts.get(label, self.other_class).inc()
            else:  # one increment per class: 64 rows of two classes 62 -> 7 us
                for label, n in collections.Counter(labels).items():
                    self.class_counts.get(label, self.other_class).inc(n)
            if self.probability is not None and prediction.probabilities is not None:
                observe_all(self.probability, prediction.probabilities[:, 1])
        elif self.value is not None:
            if set(map(type, labels)) == {float}:  # a plain float is observed as such
                observe_all(self.value, np.asarray(labels, dtype=np.float64))
            else:
                for value in labels:
                    if isinstance(value, int | float):
                        self.value.observe(value)
        if self.profile is not None and not (batch.n_rows == 1 and self._clean_row(batch.columns)):
            for name, counts in observe(self.profile, batch.columns, batch.spans).items():
                for kind, count in zip(KINDS, counts, strict=True):
                    if count:
                        self.features[name, kind].inc(count)

    def observe_many(self, answered: Sequence[tuple[Batch, Prediction]]) -> None:
        """Count several answered batches as one: their rows and labels joined, the probabilities
        of those that carried them, the spans every batch has. The same counts as `observe` one
        by one (each row is counted alone); a histogram's `_sum` adds in another order. Seven
        64-row requests: 216 -> 67 us (timed in process). Batches that cannot be joined are
        counted one by one. Never raises: metrics never fail an answer; a count that fails is
        logged, and what it counted before it failed stays counted (as for a batch alone)."""
        joined = _joined(answered) if len(answered) > 1 else None
        pairs = answered if joined is None else [joined]
        for batch, prediction in pairs:
            try:
                self.observe(batch, prediction)
            except Exception as error:
                logger.warning("prediction metrics failed: %s", type(error).__name__)


def _joined(answered: Sequence[tuple[Batch, Prediction]]) -> tuple[Batch, Prediction] | None:
    """The batches and their predictions as one, or None when they cannot be joined (a batch
    unlike the others, which must not cost the others their counts)."""
    try:
        batch = Batch.concat([b for b, _ in answered], spans=True)
        labels = list(itertools.chain.from_iterable(p.labels for _, p in answered))
        probabilities = [p.probabilities for _, p in answered if p.probabilities is not None]
        return batch, Prediction(labels, np.concatenate(probabilities) if probabilities else None)
    except Exception:
        return None


def reference_profile(predictor: Predictor, artifact: Profile | None) -> Profile | None:
    """The profile a contract-path model is watched against: `artifact` when given, else one built
    from the input example with the categories of the model's encoders; None without either."""
    if predictor.schema is None:
        return None
    if artifact is not None:
        return artifact
    example = predictor.loaded.input_example
    if example is None or example.empty:
        return None
    categories = {f.name: f.categories for f in predictor.schema.features if f.categories is not None}
    names = [f.name for f in predictor.schema.features]
    return build_profile(example[[n for n in names if n in example.columns]], categories)


class Watch:
    """Everything that observes answered requests: metrics, the inference log, the shadow."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        log: InferenceLog | None = None,
        shadow: Shadow | None = None,
        artifact: Profile | None = None,
    ) -> None:
        self.log = log
        self.shadow = shadow
        self.artifact = artifact
        self.metrics = PredictionMetrics(registry)
        self._models: weakref.WeakKeyDictionary[Predictor, ModelWatch] = weakref.WeakKeyDictionary()
        self._model: ModelWatch | None = None
        """The last model looked up: the served one, found without a weak reference a request."""
        self._uncounted: list[tuple[ModelWatch, Batch, Prediction]] = []
        """Batches answered in this turn of the event loop, counted together at its next turn."""

    def served(self, predictor: Predictor) -> None:
        """A model is served from now on: build its profile (off the request path)."""
        try:
            profile = reference_profile(predictor, self.artifact)
        except Exception as exc:  # a profile is an aid: never a reason not to serve
            logger.warning("no reference profile for the feature metrics: %s", type(exc).__name__)
            profile = None
        self._models[predictor] = self._model = ModelWatch(predictor, self.metrics, profile)

    def _count(self) -> None:
        """Count the batches answered since the last count, one model's together."""
        uncounted, self._uncounted = self._uncounted, []
        by_model: dict[ModelWatch, list[tuple[Batch, Prediction]]] = {}
        for model, batch, prediction in uncounted:
            by_model.setdefault(model, []).append((batch, prediction))
        for model, answered in by_model.items():
            model.observe_many(answered)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what the inference log holds (within `timeout_s`) and stop the shadow. Blocking."""
        if self.log is not None:
            self.log.close(timeout_s)
        if self.shadow is not None:
            self.shadow.close(timeout_s)

    def answered(self, admission: Admission, exc: BaseException | None) -> None:
        """One request left the data plane, answered (`exc` None) or with an error. Never raises.

        On the request path: one append of the request's rows and prediction for the metrics,
        which count what a turn of the event loop answered together at the next turn (a batch of
        seven 64-row requests answers them in one turn: one count rather than seven); one append
        to the shadow's queue and one to the inference log's, of the few values the record is
        built from later, in the log's writer thread. Not the admission nor the exception: the
        log holds what it is offered for a linger, and those two reach the whole request (its
        scope, connection, frames), which the garbage collector would then walk again and again.
        Called with no event loop running (a test), it counts at once."""
        predictor = admission.predictor
        prediction = admission.prediction
        if exc is None and prediction is not None:
            batch = admission.batch
            model = self._model
            if model is None or model.predictor() is not predictor:
                model = self._model = self._models.get(predictor)
            if model is not None and isinstance(batch, Batch):
                self._uncounted.append((model, batch, prediction))
                if len(self._uncounted) == 1:
                    try:
                        asyncio.get_running_loop().call_soon(self._count)
                    except RuntimeError:  # no event loop running here
                        self._count()
            if self.shadow is not None and admission.request is not None:
                self.shadow.offer(predictor, admission.request, prediction)
        if self.log is not None and self.log.takes():
            latency_ms = (time.perf_counter() - admission.started) * 1000
            status, outputs = answer_of(admission.answer, exc)
            self.log.put(
                build_record,
                admission.request_id,
                predictor,
                admission.route,
                admission.payload,
                outputs,
                status,
                latency_ms,
                time.time(),
            )


def build_watch(settings: Settings, metrics: Metrics) -> Watch:
    """The watch `settings` ask for: the inference log (opens its sink, starts its thread), the
    reference profile artifact (MODEL_API_REFERENCE_PROFILE; ValueError when unreadable) and the
    shadow (not loaded yet: `shadow.follow`). Blocking: call it in a worker thread."""
    artifact = None
    if settings.reference_profile is not None:
        try:
            artifact = Profile.from_dict(orjson.loads(settings.reference_profile.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"the reference profile cannot be read: {type(exc).__name__}") from exc
    log = build_inference_log(settings, metrics.registry)
    shadow = None
    if settings.shadow_uri:
        from model_api.shadow import Shadow

        shadow = Shadow(settings, metrics)
    return Watch(metrics.registry, log=log, shadow=shadow, artifact=artifact)
