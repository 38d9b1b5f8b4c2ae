"""shadow.py: a shadow that drops (and counts) what its busy thread cannot take, rests on its
budget, counts a failing challenger, and never raises into the request that offers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from model_api.dataplane import InferenceRequest
from model_api.errors import InvalidInput
from model_api.inputs import ModelInput, ModelSpec
from model_api.metrics import Metrics
from model_api.predictor import Prediction, Predictor
from model_api.registry import LoadedModel
from model_api.rows import Records
from model_api.settings import Settings
from model_api.shadow import Shadow, rest_s, shadow_settings
from model_api.signature import model_spec
from tests.support import wait_until


def test_the_challenger_is_loaded_alone_and_may_change_its_contract() -> None:
    settings = shadow_settings(Settings(shadow_uri="models:/M@challenger", model_threads=4))
    assert settings.model_uri == "models:/M@challenger"
    assert (settings.batching, settings.model_threads, settings.reload_accept_schema_change) == (
        False,
        1,
        True,
    )
    assert settings.startup_retry_s == 0


class HeldInputs:
    """Real rows whose parsing waits on a gate: holds the shadow's thread busy while a test offers."""

    def __init__(self, rows: list[dict[str, Any]], gate: threading.Event, fail: bool = False) -> None:
        self.records = Records(rows, "instances")
        self.gate = gate
        self.fail = fail
        self.started = threading.Event()

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        self.started.set()
        assert self.gate.wait(30)
        if self.fail:
            raise InvalidInput("the challenger's contract refuses these rows")
        return self.records.to_model_input(spec, params, max_rows)


@pytest.fixture
def predictor(champion: LoadedModel) -> Iterator[Predictor]:
    predictor = Predictor(champion, model_spec(champion), threads=1, metrics=Metrics())
    yield predictor
    predictor.close()


def count(shadow: Shadow, outcome: str, version: str) -> float:
    value = shadow.metrics.registry.get_sample_value(
        "shadow_requests_total", {"challenger_version": version, "outcome": outcome}
    )
    return value or 0.0


def test_a_busy_shadow_drops_and_counts_and_a_failing_one_counts(
    predictor: Predictor, example_rows: list[dict[str, Any]]
) -> None:
    settings = Settings(
        shadow_uri="models:/ChurnPredictor@champion",
        shadow_sample_rate=1.0,
        shadow_queue_size=2,
        shadow_budget=1.0,
    )
    shadow = Shadow(settings, Metrics())
    version = predictor.version or ""
    answer = Prediction([0] * len(example_rows))
    try:
        shadow.offer(predictor, InferenceRequest(Records(example_rows, "instances")), answer)
        assert not shadow._pending and count(shadow, "dropped", version) == 0  # no challenger yet
        shadow.serve(predictor)
        gate = threading.Event()
        held = HeldInputs(example_rows, gate, fail=True)
        shadow.offer(predictor, InferenceRequest(held), answer)
        assert held.started.wait(30), "the shadow thread took the first request"
        for _ in range(5):  # two wait in the queue, three are dropped; none blocks
            shadow.offer(predictor, InferenceRequest(Records(example_rows, "instances")), answer)
        assert count(shadow, "dropped", version) == 3
        gate.set()
        wait_until(lambda: count(shadow, "scored", version) == 2, 30, "the queued requests to be scored")
        assert count(shadow, "failed", version) == 1
        # The champion as its own challenger: every row agrees with its real labels.
        labels = {"model_name": "ChurnPredictor", "champion_version": version, "challenger_version": version}
        real = predictor.predict_sync(
            Records(example_rows, "instances").to_model_input(predictor.spec, None, 100), False
        )
        shadow.score([(predictor, InferenceRequest(Records(example_rows, "instances")), real)])
        registry = shadow.metrics.registry
        equal = registry.get_sample_value("shadow_rows_total", {**labels, "agreement": "equal"})
        assert equal is not None and equal >= len(example_rows)
    finally:
        shadow.close(10)


def test_the_rest_keeps_scoring_to_the_budget_share_of_wall_time() -> None:
    for budget in (0.05, 0.25, 1.0):
        rest = rest_s(0.02, budget)
        assert 0.02 / (0.02 + rest) == pytest.approx(budget)
    assert rest_s(-1.0, 0.05) == 0.0  # a clock that went back rests nothing, never negative


def test_the_shadow_rests_on_its_budget_and_close_cuts_the_rest_short(
    predictor: Predictor, example_rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[float, float]] = []

    def rest_forever(spent_s: float, budget: float) -> float:
        asked.append((spent_s, budget))
        return 3600.0

    monkeypatch.setattr("model_api.shadow.rest_s", rest_forever)
    monkeypatch.setattr("model_api.shadow.IDLE_WAIT_S", 3600.0)  # only an offer wakes the idle thread
    settings = Settings(
        shadow_uri="models:/ChurnPredictor@champion",
        shadow_sample_rate=1.0,
        shadow_queue_size=2,
        shadow_budget=0.05,
    )
    shadow = Shadow(settings, Metrics())
    version = predictor.version or ""
    answer = Prediction([0] * len(example_rows))
    try:
        shadow.serve(predictor)
        wait_until(lambda: shadow._pending.idle, 30, "the shadow thread to wait on its empty queue")
        shadow.offer(predictor, InferenceRequest(Records(example_rows, "instances")), answer)
        wait_until(lambda: len(asked) == 1, 30, "the first request to be scored, then a rest")
        assert count(shadow, "scored", version) == 1
        assert asked[0][0] > 0 and asked[0][1] == 0.05
        for _ in range(3):  # while it rests: two wait, one is dropped, none raises
            shadow.offer(predictor, InferenceRequest(Records(example_rows, "instances")), answer)
        assert len(shadow._pending) == 2 and count(shadow, "dropped", version) == 1
    finally:
        shadow.close(10)
    assert not shadow._thread.is_alive()  # close() woke it from an hour's rest
    assert count(shadow, "scored", version) == 1 and not shadow._pending
