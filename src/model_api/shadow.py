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

import gc
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from model_api.comparison import agreement, predict_each, probability_difference
from model_api.inputs import ModelInput
from model_api.mailbox import Mailbox
from model_api.metrics import LATENCY_BUCKETS, Metrics
from model_api.predictor import Prediction, Predictor
from model_api.rollout import Rollout, load_from_registry, load_predictor
from model_api.settings import Settings

logger = logging.getLogger(__name__)

DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)

IDLE_WAIT_S = 1.0
"""How long the idle shadow thread sleeps before it looks again (an offer wakes it sooner)."""

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
        self.budget = settings.shadow_budget
        self._stop = threading.Event()
        self.predictor: Predictor | None = None
        self.metrics = metrics
        registry = metrics.registry
        self.error: str | None = None
        """Why the challenger is not loaded, when it is not."""
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not security
        self._pending: Mailbox[Job] = Mailbox(settings.shadow_queue_size)
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
            "The shadow challenger's time per scoring (the sampled requests waiting, parsed and "
            "predicted in one model call where rows merge), by version.",
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
        loaded = predictor.loaded
        # Before the predictor: `offer` counts drops on this child once it sees a predictor.
        self._dropped = self._requests.labels(loaded.version or "", "dropped")
        self.predictor = predictor  # the rollout drains and closes the one before
        self.error = None
        labels = loaded.name, loaded.version or "", loaded.ref.alias or ""
        if self._served is not None and self._served != labels:
            self._info.labels(*self._served).set(0)
        self._served = labels
        self._info.labels(*labels).set(1)

    def offer(self, champion: Predictor, request: Any, prediction: Prediction) -> None:
        """Queue one answered request for the challenger if the sample takes it and the queue has
        room (else it is counted as dropped); never blocks, never raises. On the request path: a
        length check and one append (no lock, no exception for a full queue)."""
        if self.predictor is None or (self.sample_rate < 1.0 and self._random() >= self.sample_rate):
            return
        if self._stop.is_set() or not self._pending.put((champion, request, prediction)):
            self._dropped.inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the shadow thread (queued requests are not scored) and the challenger."""
        self._stop.set()
        self._pending.wake()
        self._pending.take()
        self._thread.join(timeout_s)
        if self.predictor is not None:
            self.predictor.close()

    def _run(self) -> None:
        pending, stop = self._pending, self._stop
        while not stop.is_set():
            if not pending:
                pending.wait(IDLE_WAIT_S)
                continue
            # What waited meanwhile (at most the queue's size), scored together in one model call.
            jobs = pending.take()
            started = time.perf_counter()
            try:
                self.score(jobs)
            except Exception:  # the shadow thread must outlive any surprise
                logger.exception("the shadow challenger's comparison failed")
            del jobs  # not held while resting
            if stop.wait(rest_s(time.perf_counter() - started, self.budget)):
                return

    def score(self, jobs: Sequence[Job]) -> None:
        """Score sampled requests with the challenger (their rows in one model call where its rows
        are exact merged, as the micro-batcher does) and compare each with its champion's answer.
        Runs in the shadow thread; public for tests."""
        challenger = self.predictor
        if challenger is None or not jobs:
            return
        version = challenger.version or ""
        with_proba = challenger.has_probabilities and all(c.has_probabilities for c, _, _ in jobs)
        started = time.perf_counter()
        kept: list[Job] = []
        inputs: list[ModelInput] = []
        for job in jobs:
            try:
                inputs.append(job[1].inputs.to_model_input(challenger.spec, job[1].params, self.max_rows))
                kept.append(job)
            except Exception:
                self._requests.labels(version, "failed").inc()
        try:
            answers = predict_each(challenger, inputs, with_proba)
        except Exception as exc:
            self._requests.labels(version, "failed").inc(len(kept))
            logger.debug("the shadow challenger failed: %s", type(exc).__name__)
            return
        finally:
            self._latency.labels(version).observe(time.perf_counter() - started)
        self._requests.labels(version, "scored").inc(len(kept))
        references = self._champion_probabilities(kept) if with_proba else {}
        for (champion, _, prediction), answer in zip(kept, answers, strict=True):
            labels = champion.name, champion.version or "", version
            equal, total = agreement(prediction.labels, answer.labels)
            self._rows.labels(*labels, "equal").inc(equal)
            self._rows.labels(*labels, "different").inc(total - equal)
            reference = prediction.probabilities
            if reference is None:
                reference = references.get(id(prediction))
            if reference is None or answer.probabilities is None:
                continue
            histogram = self._difference.labels(*labels)
            for value in probability_difference(
                reference, champion.classes, answer.probabilities, challenger.classes
            ).tolist():
                histogram.observe(value)

    def _champion_probabilities(self, jobs: Sequence[Job]) -> dict[int, np.ndarray]:
        """The champion's probabilities for the answers that carried none (the client asked for
        labels only), by id of the answer; those the champion cannot give are left out."""
        wanted: dict[int, tuple[Predictor, list[tuple[Prediction, ModelInput]]]] = {}
        for champion, request, prediction in jobs:
            if prediction.probabilities is not None:
                continue
            try:
                parsed = request.inputs.to_model_input(champion.spec, request.params, self.max_rows)
            except Exception as exc:  # compared by labels only
                logger.debug("the champion cannot parse a sampled request again: %s", type(exc).__name__)
                continue
            wanted.setdefault(id(champion), (champion, []))[1].append((prediction, parsed))
        found: dict[int, np.ndarray] = {}
        for champion, pairs in wanted.values():
            try:
                answers = predict_each(champion, [parsed for _, parsed in pairs], True)
            except Exception as exc:  # compared by labels only
                logger.debug("the champion's probabilities failed: %s", type(exc).__name__)
                continue
            for (prediction, _), answer in zip(pairs, answers, strict=True):
                if answer.probabilities is not None:
                    found[id(prediction)] = answer.probabilities
        return found


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
    # Loaded after the app froze what the served model's load left (main.py's gc.freeze): freeze
    # the challenger too, or every full garbage collection walks its objects again (it tripled
    # their cost, a few microseconds a request). Before the first request: nothing of one is frozen.
    await anyio.to_thread.run_sync(freeze_garbage)
    rollout = Rollout(shadow, shadow.settings, on_swap=lambda: None)
    rollout.start()
    return rollout


def freeze_garbage() -> None:
    """Collect, then move every object alive into the collector's permanent generation."""
    gc.collect()
    gc.freeze()


def rest_s(spent_s: float, budget: float) -> float:
    """How long the shadow thread rests after `spent_s` seconds of scoring so that scoring takes
    at most `budget` (0 < budget <= 1) of its wall time: spent / (spent + rest) = budget.

    Wall time, not the thread's CPU time: on a busy core the thread also waits for the GIL while
    it scores, and that wait is time the event loop ran, so the share of the core the challenger
    takes from the requests is at most `budget`, whatever the load."""
    return max(0.0, spent_s) * (1.0 - budget) / budget
