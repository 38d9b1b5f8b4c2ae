"""A shadow challenger: a second model scores a sample of live requests, off the request path.

With MODEL_API_SHADOW_URI (models:/ChurnPredictor@challenger), the challenger is loaded with the
same `load_predictor` as the served model and followed by its own `Rollout`, so moving the alias
moves the shadow. The data plane offers each answered request (`offer`, which never blocks and
never raises); a sample (MODEL_API_SHADOW_SAMPLE_RATE) is queued for the shadow's one thread,
which parses the request's rows against the challenger's own contract and scores them. The
queue is small (MODEL_API_SHADOW_QUEUE_SIZE): when the thread is busy, requests are dropped and
counted, so the challenger takes at most one thread of model time and no answer waits on it.

Metrics (versions as labels; a model's versions are few):

- `shadow_rows_total{model_name, champion_version, challenger_version, agreement}`: rows scored
  by both, agreement "equal" or "different" labels; the share of equal labels is
  equal / (equal + different);
- `shadow_probability_difference{...}`: per row, the mean absolute difference of the two models'
  class probabilities (over the classes both know); `_sum / _count` is the mean. When the
  client's answer carried no probabilities, the shadow thread asks the champion for them too;
- `shadow_requests_total{challenger_version, outcome}`: scored, failed (the challenger refused
  or raised) or dropped (the queue was full);
- `shadow_latency_seconds{challenger_version}`: the challenger's time per request, parsing
  included; `shadow_model_info{model_name, model_version, alias}`: the challenger served.

The challenger's model calls are also in `model_latency_seconds` under its own version label, and
its rollout's checks in `model_reloads_total`: one Metrics a process (a second one would clobber
the first's gauges in multiprocess mode).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from typing import Any

import anyio.to_thread
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from model_api.metrics import LATENCY_BUCKETS, Metrics
from model_api.predictor import Prediction, Predictor
from model_api.rollout import Rollout, load_from_registry, load_predictor
from model_api.settings import Settings

logger = logging.getLogger(__name__)

DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

Job = tuple[Predictor, Any, Prediction]
"""The champion that answered, the request (dataplane.InferenceRequest), and its answer."""


def shadow_settings(settings: Settings) -> Settings:
    """The settings the challenger is loaded and followed with: its URI, no batching (the shadow
    thread calls the model itself), one model thread, any contract (it answers no client), and no
    startup retries (a missing challenger must not hold up the served model)."""
    return settings.model_copy(
        update={
            "model_uri": settings.shadow_uri,
            "batching": False,
            "model_threads": 1,
            "reload_accept_schema_change": True,
            "startup_retry_s": 0.0,
        }
    )


class Shadow:
    """The challenger, its sample queue and thread, and its metrics in `metrics.registry`.

    Also the target its `Rollout` swaps versions into (`predictor`, `metrics`, `serve`)."""

    def __init__(self, settings: Settings, metrics: Metrics, *, rng: random.Random | None = None) -> None:
        self.settings = shadow_settings(settings)
        self.sample_rate = settings.shadow_sample_rate
        self.max_rows = settings.max_rows
        self.predictor: Predictor | None = None
        self.metrics = metrics
        registry = metrics.registry
        self.error: str | None = None
        """Why the challenger is not loaded, when it is not."""
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not security
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=settings.shadow_queue_size)
        versions = ["model_name", "champion_version", "challenger_version"]
        self._rows = Counter(
            "shadow_rows",
            "Rows scored by the champion and the shadow challenger, by whether their labels are equal.",
            [*versions, "agreement"],
            registry=registry,
        )
        self._difference = Histogram(
            "shadow_probability_difference",
            "Per row, the mean absolute difference of the champion's and challenger's probabilities.",
            versions,
            buckets=DIFFERENCE_BUCKETS,
            registry=registry,
        )
        self._requests = Counter(
            "shadow_requests",
            "Requests offered to the shadow challenger, by outcome (scored, failed, dropped).",
            ["challenger_version", "outcome"],
            registry=registry,
        )
        self._latency = Histogram(
            "shadow_latency_seconds",
            "The shadow challenger's time per request (parsing and model), by version.",
            ["challenger_version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._info = Gauge(
            "shadow_model_info",
            "The shadow challenger: always 1, with its name, version and alias as labels.",
            ["model_name", "model_version", "alias"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._served: tuple[str, str, str] | None = None
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    def serve(self, predictor: Predictor) -> None:
        """Score with `predictor` from now on (the first load and every rollout of the challenger)."""
        self.predictor = predictor  # the rollout drains and closes the one before
        self.error = None
        loaded = predictor.loaded
        labels = loaded.name, loaded.version or "", loaded.ref.alias or ""
        if self._served is not None and self._served != labels:
            self._info.labels(*self._served).set(0)
        self._served = labels
        self._info.labels(*labels).set(1)

    def offer(self, champion: Predictor, request: Any, prediction: Prediction) -> None:
        """Queue one answered request for the challenger if the sample takes it; never blocks."""
        if self.predictor is None or (self.sample_rate < 1.0 and self._random() >= self.sample_rate):
            return
        try:
            self._queue.put_nowait((champion, request, prediction))
        except queue.Full:
            self._requests.labels(self.predictor.version or "", "dropped").inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the shadow thread (queued requests are not scored) and the challenger."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)
        if self.predictor is not None:
            self.predictor.close()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self.score(*job)
            except Exception:  # the shadow thread must outlive any surprise
                logger.exception("the shadow challenger's comparison failed")

    def score(self, champion: Predictor, request: Any, prediction: Prediction) -> None:
        """Score one request with the challenger and compare (in the shadow thread; public for tests)."""
        challenger = self.predictor
        if challenger is None:
            return
        version = challenger.version or ""
        with_proba = champion.has_probabilities and challenger.has_probabilities
        started = time.perf_counter()
        try:
            batch = request.inputs.to_model_input(challenger.spec, request.params, self.max_rows)
            answer = challenger.predict_sync(batch, with_proba)
        except Exception as exc:
            self._requests.labels(version, "failed").inc()
            logger.debug("the shadow challenger failed: %s", type(exc).__name__)
            return
        finally:
            self._latency.labels(version).observe(time.perf_counter() - started)
        self._requests.labels(version, "scored").inc()
        labels = champion.name, champion.version or "", version
        equal, total = agreement(prediction.labels, answer.labels)
        self._rows.labels(*labels, "equal").inc(equal)
        self._rows.labels(*labels, "different").inc(total - equal)
        if not with_proba or answer.probabilities is None:
            return
        reference = prediction.probabilities
        if reference is None:  # the client asked for labels only: ask the champion here
            batch = request.inputs.to_model_input(champion.spec, request.params, self.max_rows)
            reference = champion.predict_sync(batch, True).probabilities
        if reference is None:
            return
        histogram = self._difference.labels(*labels)
        for value in probability_difference(
            reference, champion.classes, answer.probabilities, challenger.classes
        ).tolist():
            histogram.observe(value)


async def follow(shadow: Shadow) -> Rollout | None:
    """Load the challenger (in a worker thread) and follow its reference like the served model's;
    the rollout to close at shutdown, or None when the challenger could not be loaded (logged, and
    shown in /model/info; the served model is not held up by its challenger)."""
    try:
        predictor = await anyio.to_thread.run_sync(
            load_predictor, load_from_registry, shadow.settings, shadow.metrics
        )
    except Exception as exc:
        shadow.error = str(exc)
        logger.error("the shadow challenger %s could not be loaded: %s", shadow.settings.model_uri, exc)
        return None
    shadow.serve(predictor)
    rollout = Rollout(shadow, shadow.settings, on_swap=lambda: None)
    rollout.start()
    return rollout


def agreement(champion: Any, challenger: Any) -> tuple[int, int]:
    """(equal, compared): row by row for two lists of one label a row of the same length; else
    the two answers as a whole count as one row."""
    if isinstance(champion, list) and isinstance(challenger, list) and len(champion) == len(challenger):
        return sum(1 for a, b in zip(champion, challenger, strict=True) if a == b), len(champion)
    return int(champion == challenger), 1


def probability_difference(
    first: np.ndarray, first_classes: list[Any], second: np.ndarray, second_classes: list[Any]
) -> np.ndarray:
    """Per row, the mean absolute difference of two probability arrays [rows, classes] over the
    classes both models know (an empty array when they share none or the rows differ)."""
    common = [c for c in first_classes if c in second_classes]
    if not common or first.shape[0] != second.shape[0]:
        return np.empty(0)
    a = first[:, [first_classes.index(c) for c in common]]
    b = second[:, [second_classes.index(c) for c in common]]
    difference: np.ndarray = np.abs(a - b).mean(axis=1)
    return difference
