"""watch.py: prediction and feature metrics of one answered batch, the reference profile a model is
watched against, and the inference record of an answer or an error."""

from __future__ import annotations

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
