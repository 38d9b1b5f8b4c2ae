"""watch.py: prediction and feature metrics of one answered batch, the reference profile a model is
watched against, and the inference record of an answer or an error."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from model_api.contract import Batch
from model_api.dataplane import Admission, DataPlane
from model_api.errors import InvalidInput
from model_api.inference_log import InferenceLog, JsonLinesSink, utc_time
from model_api.inference_record import jsonable_body, make_record
from model_api.metrics import Metrics
from model_api.predictor import Prediction, Predictor
from model_api.profile import FeatureCounts, Profile, observe
from model_api.registry import LoadedModel
from model_api.settings import Settings
from model_api.signature import model_spec
from model_api.watch import (
    COUNT_FIRST_ROWS,
    KINDS,
    ModelWatch,
    PredictionMetrics,
    Watch,
    build_watch,
    reference_profile,
)


@pytest.fixture
def predictor(champion: LoadedModel) -> Predictor:
    return Predictor(champion, model_spec(champion), threads=1, metrics=Metrics())


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return (
        registry.get_sample_value(name, {"model_name": "ChurnPredictor", "model_version": "1", **labels})
        or 0.0
    )


def test_a_batch_counts_its_classes_probabilities_and_flagged_features(predictor: Predictor) -> None:
    registry = CollectorRegistry()
    profile = Profile(numeric={"age": (18.0, 80.0)}, categorical={"contract": frozenset({"one-year"})})
    watch = ModelWatch(predictor, PredictionMetrics(registry), profile)
    batch = Batch({"age": [17, 30, None, 99], "contract": ["one-year", "weekly", None, "one-year"]}, 4)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    watch.observe(batch, Prediction([0, 1, 0, 1], proba))
    assert sample(registry, "predicted_class_total", predicted_class="0") == 2
    assert sample(registry, "predicted_class_total", predicted_class="1") == 2
    assert sample(registry, "positive_class_probability_count") == 4
    assert sample(registry, "positive_class_probability_sum") == pytest.approx(0.1 + 0.8 + 0.4 + 0.95)
    assert sample(registry, "positive_class_probability_bucket", le="0.5") == 2
    flagged = {
        (feature, kind): sample(registry, "feature_values_flagged_total", feature=feature, kind=kind)
        for feature in ("age", "contract")
        for kind in ("missing", "unknown", "out_of_range")
    }
    assert flagged == {
        ("age", "missing"): 1,
        ("age", "unknown"): 0,
        ("age", "out_of_range"): 2,
        ("contract", "missing"): 1,
        ("contract", "unknown"): 1,
        ("contract", "out_of_range"): 0,
    }


def test_a_label_the_model_does_not_know_counts_as_other(predictor: Predictor) -> None:
    registry = CollectorRegistry()
    ModelWatch(predictor, PredictionMetrics(registry), None).observe(Batch({}, 2), Prediction([1, "x"]))
    assert sample(registry, "predicted_class_total", predicted_class="other") == 1
    assert sample(registry, "positive_class_probability_count") == 0  # no probabilities asked for


def test_a_long_batch_counts_its_classes_as_a_short_one_does(predictor: Predictor) -> None:
    """From COUNT_FIRST_ROWS rows on, classes are counted first and incremented once each."""
    registry = CollectorRegistry()
    labels: list[Any] = [0, 1, 1, "x", 1] * 13  # 65 rows
    assert len(labels) >= COUNT_FIRST_ROWS
    ModelWatch(predictor, PredictionMetrics(registry), None).observe(Batch({}, 65), Prediction(labels))
    assert sample(registry, "predicted_class_total", predicted_class="0") == 13
    assert sample(registry, "predicted_class_total", predicted_class="1") == 39
    assert sample(registry, "predicted_class_total", predicted_class="other") == 13


@pytest.mark.parametrize(
    ("n_rows", "change", "outside", "spanned"),
    [
        # every value within the profile: counted from validation's spans alone
        (64, {}, 0, {"age", "tenure_months", "monthly_charges"}),
        (64, {"age": 95, "monthly_charges": 1.5}, 2, {"age", "tenure_months", "monthly_charges"}),
        (16, {"tenure_months": -3}, 1, {"age", "tenure_months", "monthly_charges"}),  # fewest in bulk
        (15, {"tenure_months": -3}, 1, set()),  # too few: checked value by value, no span
        (64, {"tenure_months": 12.0}, 0, {"age", "monthly_charges"}),  # made an int value by value
    ],
)
def test_validations_spans_count_as_the_values_do(
    predictor: Predictor, n_rows: int, change: dict[str, object], outside: int, spanned: set[str]
) -> None:
    """A batch validated by the contract carries each numeric column's smallest and largest value
    (`Batch.spans`); the feature metrics read them instead of the values, with the same counts."""
    assert predictor.schema is not None
    example = predictor.loaded.input_example
    assert example is not None
    rows = [
        {k: v.item() if hasattr(v, "item") else v for k, v in example.iloc[i % len(example)].items()}
        for i in range(n_rows)
    ]
    for i, (name, value) in enumerate(change.items()):
        rows[3 + i][name] = value
    batch = predictor.schema.parse_records(rows, max_rows=1000)
    profile = Profile(
        numeric={"age": (18.0, 80.0), "tenure_months": (0.0, 72.0), "monthly_charges": (20.0, 120.0)}
    )
    assert set(batch.spans) & set(profile.numeric) == spanned
    by_value = observe(profile, batch.columns)
    assert sum(counts.out_of_range for counts in by_value.values()) == outside
    assert observe(profile, batch.columns, batch.spans) == by_value
    registry = CollectorRegistry()
    ModelWatch(predictor, PredictionMetrics(registry), profile).observe(batch, Prediction([0] * n_rows))
    counted = {
        name: FeatureCounts(
            *(sample(registry, "feature_values_flagged_total", feature=name, kind=kind) for kind in KINDS)
        )
        for name in profile.numeric
    }
    assert counted == by_value


def test_the_profile_comes_from_the_input_example_and_the_encoders(predictor: Predictor) -> None:
    example = predictor.loaded.input_example
    assert example is not None
    profile = reference_profile(predictor, None)
    assert profile is not None
    assert profile.numeric["tenure_months"] == (
        example["tenure_months"].min(),
        example["tenure_months"].max(),
    )
    # The encoder's categories, not only the three values the example shows.
    assert profile.categorical["payment_method"] == {
        "bank-transfer",
        "credit-card",
        "electronic-check",
        "mailed-check",
    }
    artifact = Profile(numeric={"age": (0.0, 120.0)})
    assert reference_profile(predictor, artifact) is artifact


def test_the_pyfunc_path_has_no_profile(champion: LoadedModel) -> None:
    loaded = dataclasses.replace(champion, flavor="python_function", model=champion.pyfunc)
    spec = model_spec(loaded)
    assert spec.contract is None
    pyfunc = Predictor(loaded, spec, threads=1, metrics=Metrics())
    assert reference_profile(pyfunc, Profile(numeric={"age": (0.0, 1.0)})) is None


def test_build_watch_reads_a_profile_artifact_and_refuses_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"numeric": {"age": [18, 85]}, "categorical": {"contract": ["one-year"]}}))
    watch = build_watch(Settings(reference_profile=path), Metrics())
    assert watch.artifact == Profile({"age": (18.0, 85.0)}, {"contract": frozenset({"one-year"})})
    assert watch.log is None and watch.shadow is None
    path.write_text("{not json")
    with pytest.raises(ValueError, match="reference profile"):
        build_watch(Settings(reference_profile=path), Metrics())
    path.write_text(json.dumps({"numeric": {"age": [85, 18]}}))
    with pytest.raises(ValueError, match="low > high"):
        build_watch(Settings(reference_profile=path), Metrics())


def test_records_of_an_answer_and_of_an_error(predictor: Predictor) -> None:
    plane = DataPlane(Settings(), Metrics())
    admission = Admission(plane, predictor, None, 30.0, route="/invocations", request_id="rid-1")
    admission.payload = b'{"dataframe_records": [{"age": 30}]}'
    admission.answer = b'{"predictions": [1]}'
    record = make_record(admission, None, 1.5)
    assert (record.request_id, record.route, record.status_code, record.latency_ms) == (
        "rid-1",
        "/invocations",
        200,
        1.5,
    )
    assert record.inputs == {"dataframe_records": [{"age": 30}]}
    assert record.outputs == {"predictions": [1]}
    assert (record.model_name, record.model_version) == ("ChurnPredictor", predictor.version)
    failed = make_record(admission, InvalidInput("the rows break the contract"), 2.0)
    assert failed.status_code == 422
    assert failed.outputs == {"error": {"code": "invalid_input", "message": "the rows break the contract"}}
    assert make_record(admission, RuntimeError("secret"), 2.0).outputs == {
        "error": {"code": "internal_error"}
    }


def test_bodies_the_record_keeps() -> None:
    assert jsonable_body(b"age,contract\n30,one-year\n") == "age,contract\n30,one-year\n"
    assert jsonable_body(b"PAR1\xff\xfe") == {"bytes": 6}
    assert jsonable_body(np.array([[1, 2]])) == [[1, 2]]
    assert jsonable_body(None) is None


@pytest.mark.parametrize(
    ("row", "flagged"),
    [
        ({"age": 30, "contract": "one-year"}, None),
        ({"age": 17, "contract": "one-year"}, ("age", "out_of_range")),
        ({"age": float("nan"), "contract": "one-year"}, ("age", "missing")),
        ({"age": True, "contract": "one-year"}, ("age", "unknown")),
        ({"age": "30", "contract": "one-year"}, ("age", "unknown")),
        ({"age": 30, "contract": "weekly"}, ("contract", "unknown")),
        ({"age": 30, "contract": None}, ("contract", "missing")),
        ({"age": 30}, ("contract", "missing")),
    ],
)
def test_a_single_row_is_counted_like_a_batch(
    predictor: Predictor, row: dict[str, object], flagged: tuple[str, str] | None
) -> None:
    registry = CollectorRegistry()
    profile = Profile(numeric={"age": (18.0, 80.0)}, categorical={"contract": frozenset({"one-year"})})
    watch = ModelWatch(predictor, PredictionMetrics(registry), profile)
    watch.observe(Batch({k: [v] for k, v in row.items()}, 1), Prediction([0]))
    counted = {
        (feature, kind)
        for feature in ("age", "contract")
        for kind in ("missing", "unknown", "out_of_range")
        if sample(registry, "feature_values_flagged_total", feature=feature, kind=kind)
    }
    assert counted == ({flagged} if flagged else set())


def test_the_log_is_handed_the_records_values_not_the_request(predictor: Predictor, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    # The writer lingers until close(): what the log holds meanwhile is what a request leaves behind.
    log = InferenceLog(JsonLinesSink(path), registry, linger_s=3600)
    watch = Watch(registry, log=log)
    plane = DataPlane(Settings(), Metrics())
    admission = Admission(plane, predictor, None, 30.0, route="/predict", request_id="rid-2")
    admission.payload = {"instances": [{"age": 30}]}
    error = InvalidInput("the rows break the contract")
    held = weakref.ref(error)
    before = time.time()
    watch.answered(admission, error)
    after = time.time()
    del error
    gc.collect()
    assert held() is None, "the log holds the exception (and through it the request's frames)"
    time.sleep(0.01)  # a record stamped when written would be later than `after`
    watch.close(10)
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert (line["request_id"], line["route"], line["status_code"]) == ("rid-2", "/predict", 422)
    assert line["inputs"] == {"instances": [{"age": 30}]}
    assert line["outputs"] == {"error": {"code": "invalid_input", "message": "the rows break the contract"}}
    assert utc_time(before) <= line["time"] <= utc_time(after)


def test_a_request_the_sample_skips_leaves_nothing_in_the_log(predictor: Predictor, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    path = tmp_path / "inference.jsonl"
    log = InferenceLog(JsonLinesSink(path), registry, sample_rate=0.0)
    watch = Watch(registry, log=log)
    admission = Admission(DataPlane(Settings(), Metrics()), predictor, None, 30.0, route="/predict")
    admission.payload = {"instances": [{"age": 30}]}
    watch.answered(admission, None)
    assert not log._pending
    watch.close(10)
    assert path.read_text() == ""
    assert registry.get_sample_value("inference_log_records_total", {"outcome": "dropped"}) == 0


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_batches_counted_together_count_as_they_do_one_by_one(predictor: Predictor) -> None:
    """`observe_many` joins the batches a turn of the event loop answered: every counter and
    bucket as when each batch is counted alone (a histogram's sum adds in another order)."""
    assert predictor.schema is not None
    example = predictor.loaded.input_example
    assert example is not None
    rows = [
        {k: v.item() if hasattr(v, "item") else v for k, v in example.iloc[i % len(example)].items()}
        for i in range(64)
    ]
    wide = [dict(r) for r in rows[5:30]]  # spans wider than the first batch's
    wide[0]["age"], wide[1]["tenure_months"], wide[2]["monthly_charges"] = 99, 0, 500.5
    odd = [dict(r) for r in rows[:20]]  # what another model's contract could let through
    odd[2]["age"], odd[5]["contract"], odd[6]["contract"], odd[7]["monthly_charges"] = (
        None,
        None,
        "weekly",
        1e6,
    )
    batches = [
        predictor.schema.parse_records(rows, max_rows=1000),  # spans on every numeric column
        predictor.schema.parse_records(wide, max_rows=1000),
        Batch({name: [r[name] for r in odd] for name in predictor.schema.names}, len(odd)),  # no spans
        predictor.schema.parse_records(rows[:1], max_rows=1000),  # one row: no spans
        predictor.schema.parse_records(rows[40:43], max_rows=1000),
    ]
    rng = np.random.default_rng(7)
    answered = []
    for i, batch in enumerate(batches):
        proba = rng.random((batch.n_rows, 2))
        proba[:, 0] = 1 - proba[:, 1]
        labels = [int(p > 0.5) for p in proba[:, 1]]
        answered.append((batch, Prediction(labels, proba if i % 2 == 0 else None)))
    profile = reference_profile(predictor, None)
    assert profile is not None
    one_by_one, together = CollectorRegistry(), CollectorRegistry()
    alone = ModelWatch(predictor, PredictionMetrics(one_by_one), profile)
    for batch, prediction in answered:
        alone.observe(batch, prediction)
    ModelWatch(predictor, PredictionMetrics(together), profile).observe_many(answered)
    expected, got = _samples(one_by_one), _samples(together)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == (pytest.approx(value) if key[0].endswith("_sum") else value), key
    flagged = [k for k, v in got.items() if k[0] == "feature_values_flagged_total" and v]
    assert len(flagged) >= 3  # the case is not trivial: missing and out-of-range values were counted
    merged = Batch.concat([b for b, _ in answered[:2]], spans=True)
    first, second = answered[0][0], answered[1][0]
    assert {n for n in first.spans if first.spans[n] != second.spans[n]} >= {"age", "tenure_months"}
    for name in first.spans:
        column = first.columns[name] + second.columns[name]
        assert merged.spans[name] == (min(column), max(column))
    assert "age" not in Batch.concat([b for b, _ in answered[:3]], spans=True).spans
    assert Batch.concat([b for b, _ in answered[:2]]).spans == {}  # the model's batch needs none


def _serving(predictor: Predictor) -> tuple[CollectorRegistry, Watch]:
    """A Watch on a registry of its own, watching `predictor`."""
    registry = CollectorRegistry()
    watch = Watch(registry)
    watch.served(predictor)
    return registry, watch


def _answered(watch: Watch, predictor: Predictor, batch: Batch, prediction: Prediction) -> None:
    admission = Admission(DataPlane(Settings(), Metrics()), predictor, None, 30.0, route="/predict")
    admission.batch, admission.prediction = batch, prediction
    watch.answered(admission, None)


def test_requests_answered_in_one_turn_are_counted_together_at_the_next(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, watch = _serving(predictor)
    counts: list[int] = []
    observe_many = ModelWatch.observe_many

    def spy(self: ModelWatch, answered: Any) -> None:
        counts.append(len(answered))
        observe_many(self, answered)

    monkeypatch.setattr(ModelWatch, "observe_many", spy)

    async def turns() -> None:
        for labels in ([0, 1], [1], [1, 1, 0]):
            _answered(watch, predictor, Batch({}, len(labels)), Prediction(labels))
        assert sample(registry, "predicted_class_total", predicted_class="1") == 0  # not yet
        await asyncio.sleep(0)
        assert counts == [3]
        assert sample(registry, "predicted_class_total", predicted_class="1") == 4
        assert sample(registry, "predicted_class_total", predicted_class="0") == 2
        _answered(watch, predictor, Batch({}, 1), Prediction([0]))
        await asyncio.sleep(0)
        assert counts == [3, 1]

    asyncio.run(turns())
    _answered(watch, predictor, Batch({}, 1), Prediction([0]))  # no event loop: counted at once
    assert counts == [3, 1, 1]
    assert sample(registry, "predicted_class_total", predicted_class="0") == 4


def test_a_batch_the_count_fails_on_loses_only_its_own(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    registry, watch = _serving(predictor)

    async def turn() -> None:
        _answered(watch, predictor, Batch({}, 2), Prediction([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]])))
        _answered(watch, predictor, Batch({}, 1), Prediction([1], np.array([0.3])))  # not [rows, classes]
        _answered(watch, predictor, Batch({}, 1), Prediction([1], np.array([[0.4, 0.6]])))
        await asyncio.sleep(0)

    asyncio.run(turn())
    # Counted one by one: the failing batch's class before its probabilities failed, as when alone.
    assert sample(registry, "predicted_class_total", predicted_class="1") == 3
    assert sample(registry, "positive_class_probability_count") == 3
    assert [r.getMessage() for r in caplog.records] == ["prediction metrics failed: IndexError"]


def test_a_joined_count_that_fails_is_not_counted_again(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches that join but whose count fails part way (probabilities of the wrong shape, after
    the classes were counted) are not counted again one by one: each row's class once."""
    registry = CollectorRegistry()
    watch = ModelWatch(predictor, PredictionMetrics(registry), None)
    watch.observe_many(
        [
            (Batch({}, 1), Prediction([1], np.array([0.3]))),
            (Batch({}, 2), Prediction([1, 0], np.array([0.6, 0.1]))),
        ]
    )
    assert sample(registry, "predicted_class_total", predicted_class="1") == 2
    assert sample(registry, "predicted_class_total", predicted_class="0") == 1
    assert [r.getMessage() for r in caplog.records] == ["prediction metrics failed: IndexError"]
