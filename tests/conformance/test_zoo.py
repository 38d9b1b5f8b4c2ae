"""The zoo builds, registers and loads; MLflow's in-process answers, the batching precondition,
and the MLflow quirks the suite relies on (KNOWN_MLFLOW_DIFFERENCES) all still hold."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conformance.reference import (
    FORM_LIMITS,
    KNOWN_MLFLOW_DIFFERENCES,
    Answer,
    build_body,
    intended_answer,
    json_diff,
    load_reference_model,
    pick,
    reference_answer,
    size,
)
from tests.conformance.zoo import SPECS, Entry, Zoo

NAMES = [spec.name for spec in SPECS]

# Entries whose answer for a row changes with its batch companions, as found by the suite:
# "value": the answer changes (the row must not be batched, or the server must remove the cause);
# "ulp": only the last bits of floats change (BLAS sums a matrix product in a batch-size order).
ROW_DEPENDENT: dict[str, tuple[str, str]] = {
    "py-every-type": ("value", "its 'dtypes' column describes the whole batch (a null turns a dtype)"),
    "sk-optional-string": (
        "value",
        "MLflow itself: a null string alone reaches the model as None (an unseen category), in a "
        "batch as NaN; see KNOWN_MLFLOW_DIFFERENCES[('sk-optional-string', 'rows alone')]",
    ),
    "sk-predict-proba": ("ulp", "LogisticRegression.predict_proba: X @ coef is gemv for 1 row, gemm for n"),
}


def answer(entry: Entry, form: str, **kwargs: Any) -> Answer:
    return reference_answer(load_reference_model(entry), build_body(entry, form, **kwargs))


def row_of(predictions: Any, i: int) -> Any:
    """Row `i` of a predictions value: a list item, or each list of a dict of lists."""
    if isinstance(predictions, dict):
        return {key: values[i] for key, values in predictions.items()}
    return predictions[i]


def n_rows(predictions: Any) -> int:
    if isinstance(predictions, dict):
        return len(next(iter(predictions.values())))
    return len(predictions)


def good_forms(entry: Entry) -> list[str]:
    return [f for f in entry.forms if (entry.name, f) not in KNOWN_MLFLOW_DIFFERENCES]


def canonical(entry: Entry, form: str) -> Answer:
    """What the entry's first good form answers, with the params `form` can carry."""
    carries_params = form not in ("csv", "parquet")
    return answer(entry, good_forms(entry)[0], params=None if carries_params else {})


@pytest.fixture
def entry(zoo: Zoo, request: pytest.FixtureRequest) -> Entry:
    name = request.param
    assert name in zoo.entries, f"{name} did not build: {zoo.failures.get(name)}"
    return zoo.entries[name]


def test_every_kind_builds_and_registers(zoo: Zoo) -> None:
    from mlflow import MlflowClient

    assert zoo.failures == {}
    assert len(zoo.entries) >= 25
    client = MlflowClient(tracking_uri=zoo.tracking_uri, registry_uri=zoo.tracking_uri)
    registered = {m.name for m in client.search_registered_models(max_results=1000)}
    assert registered == set(NAMES)
    assert str(client.get_model_version_by_alias("sk-classifier", "champion").version) == "1"


@pytest.mark.parametrize("entry", NAMES, indirect=True)
def test_entry_loads_and_predicts_its_rows(entry: Entry) -> None:
    model = load_reference_model(entry)
    meta = model.metadata
    declared = {
        "none": meta.signature is None,
        "type-hint": meta._is_signature_from_type_hint(),
        "tensor": meta.signature is not None and meta.get_input_schema().is_tensor_spec(),
        "tensors": meta.signature is not None and meta.get_input_schema().has_input_names(),
        "columns": meta.signature is not None and not meta.get_input_schema().is_tensor_spec(),
    }
    assert declared[entry.signature], f"{entry.name}: signature is {meta.signature}"
    try:
        raw = model.get_raw_model()
    except NotImplementedError:  # a custom PythonModel
        raw = model.unwrap_python_model()
    assert hasattr(raw, "predict_proba") is entry.has_proba, type(raw)
    forms = good_forms(entry) or list(entry.forms)
    got = answer(entry, forms[0])
    if entry.name == "py-optional-long":
        assert got.status == 400, got  # MLflow refuses its nulls in every form
        got = reference_answer(model, build_body(_without_nulls(entry), "dataframe_split"))
        assert got.status == 200, got
        return
    assert got.status == 200, got
    assert n_rows(got.body["predictions"]) == size(entry)


def _without_nulls(entry: Entry) -> Entry:
    assert entry.rows is not None
    return pick(entry, [i for i, row in enumerate(entry.rows) if None not in row.values()])


@pytest.mark.parametrize("entry", NAMES, indirect=True)
def test_forms_agree_except_known_differences(entry: Entry) -> None:
    """Every body form gives the same answer; a listed difference still differs (or fails)."""
    good = good_forms(entry)
    for form in entry.forms:
        got = answer(entry, form)
        if (entry.name, form) in KNOWN_MLFLOW_DIFFERENCES or (entry.name, form) in FORM_LIMITS:
            if good:
                assert got.status != 200 or json_diff(got.body, canonical(entry, form).body), (
                    f"{entry.name}/{form} is listed as a difference but answers like the other forms"
                )
            else:
                assert got.status != 200, f"{entry.name}/{form} is listed as refused but answers {got}"
            continue
        assert got.status == 200, f"{entry.name}/{form}: MLflow refuses it: {got.body}"
        diff = json_diff(got.body, canonical(entry, form).body)
        assert diff is None, f"{entry.name}/{form} differs from {good[0]}: {diff}"


ROW_INDEPENDENT = [spec.name for spec in SPECS if spec.name.startswith(("sk-", "xgb-", "lgbm-"))]


@pytest.mark.parametrize("entry", NAMES, indirect=True)
def test_rows_alone_answer_as_in_a_batch(entry: Entry) -> None:
    """The batching precondition: each row alone answers what it answers in the batch."""
    assert entry.row_independent is (entry.name in ROW_INDEPENDENT)
    dependent = []
    for form in good_forms(entry):
        batch = answer(entry, form)
        if not isinstance(batch.body["predictions"], (list, dict)):
            continue
        for i in range(size(entry)):
            alone = answer(pick(entry, [i]), form)
            assert alone.status == 200, alone
            if json_diff(row_of(alone.body["predictions"], 0), row_of(batch.body["predictions"], i)):
                dependent.append((form, i))
    kind = ROW_DEPENDENT.get(entry.name, ("", ""))[0]
    if kind == "value":
        assert dependent, f"{entry.name} is listed as row-dependent but every row answers alone as in batch"
    elif kind == "ulp":
        for form, i in dependent:
            alone = answer(pick(entry, [i]), form).body["predictions"][0]
            batch = answer(entry, form).body["predictions"][i]
            # Last bits only, loosely bounded: expit scales a relative change of the decision by
            # about |decision| (a row at -7.7 turns 1 ulp into 8), and which rows differ depends on
            # the BLAS kernel the machine picks. 1e-12 is thousands of ulps, yet a different value
            # (another reading of a row) is off by far more.
            np.testing.assert_allclose(alone, batch, rtol=1e-12, atol=0)
    else:
        assert dependent == [], f"{entry.name}: rows answer otherwise alone: {dependent}"


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs", "csv"])
def test_raising_model_refuses_its_bad_rows(zoo: Zoo, form: str) -> None:
    entry = zoo.entries["py-raising"]
    got = answer(entry, form, bad=True)
    assert got.status == 400
    assert got.body["error_code"] == "BAD_REQUEST"
    assert "-1" not in got.body["message"]  # MLflow's wrapper does not quote the model's error


@pytest.mark.parametrize("entry", NAMES, indirect=True)
def test_reference_is_mlflows_own_invocations(entry: Entry) -> None:
    """reference_answer gives what `mlflow.pyfunc.scoring_server.invocations` gives."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server
    from mlflow.pyfunc.utils.environment import _simulate_serving_environment

    model = load_reference_model(entry)
    for form in entry.forms:
        body = build_body(entry, form)
        ours = reference_answer(model, body)
        with _simulate_serving_environment():
            try:
                result = scoring_server.invocations(
                    body.content, body.content_type, model, model.metadata.get_input_schema()
                )
                theirs = Answer(result.status, json.loads(result.response))
            except MlflowException as exc:
                theirs = Answer(exc.get_http_status_code(), json.loads(exc.serialize_as_json()))
        assert ours.status == theirs.status, (form, ours, theirs)
        if ours.status == 200:
            assert json_diff(ours.body, theirs.body) is None, form
        else:
            assert ours.body["error_code"] == theirs.body["error_code"], form


# ---- right values: what the failures should answer, from the model itself --------------


def test_predict_proba_model_answers_probabilities(zoo: Zoo) -> None:
    entry = zoo.entries["sk-predict-proba"]
    raw = load_reference_model(entry).get_raw_model()
    expected = raw.predict_proba(entry.frame()).tolist()
    assert answer(entry, "dataframe_split").body == {"predictions": expected}


def test_null_in_optional_string_reaches_the_pipeline_as_nan(zoo: Zoo) -> None:
    entry = zoo.entries["sk-optional-string"]
    raw = load_reference_model(entry).get_raw_model()
    frame = entry.frame().astype({"plan": object})
    frame["plan"] = frame["plan"].where(frame["plan"].notna(), np.nan)
    as_nan = raw.predict(frame).tolist()
    as_none_string = raw.predict(frame.fillna({"plan": "None"})).tolist()
    assert as_nan != as_none_string  # the rows were chosen so that the two readings differ
    assert answer(entry, "dataframe_split").body == {"predictions": as_nan}
    assert answer(entry, "instances").body == {"predictions": as_none_string}  # MLflow's quirk


def test_dataframe_output_keeps_its_column_names(zoo: Zoo) -> None:
    predictions = answer(zoo.entries["py-frame-output"], "dataframe_records").body["predictions"]
    assert [list(row) for row in predictions] == [["score", "label", "rank"]] * 4
    assert [type(v) for v in predictions[0].values()] == [float, str, int]


def test_multioutput_answers_one_label_per_target(zoo: Zoo) -> None:
    entry = zoo.entries["sk-multioutput"]
    raw = load_reference_model(entry).get_raw_model()
    expected = raw.predict(entry.frame()).tolist()
    assert answer(entry, "dataframe_split").body == {"predictions": expected}
    assert all(len(row) == 2 for row in expected)


def test_params_reach_the_model(zoo: Zoo) -> None:
    entry = zoo.entries["py-params"]
    with_params = answer(entry, "dataframe_split").body["predictions"]
    with_defaults = answer(entry, "dataframe_split", params={}).body["predictions"]
    assert [row["label"] for row in with_params] == ["yes", "neg", "yes"]
    assert [row["label"] for row in with_defaults] == ["pos", "pos", "neg"]


def test_mlflow_ignores_an_unknown_param(zoo: Zoo) -> None:
    """MLflow drops an unknown param with a warning (the issue wants a clear 4xx from us)."""
    entry = zoo.entries["py-params"]
    got = answer(entry, "dataframe_split", params={"nope": 1})
    assert got == answer(entry, "dataframe_split", params={})


def test_type_hinted_model_gets_pydantic_objects(zoo: Zoo) -> None:
    got = answer(zoo.entries["py-pydantic-hint"], "inputs")
    assert got.body == {"predictions": ["user:HELLO:1.5", "system:BE BRIEF:None", "user:X:None"]}


def test_tensor_model_sees_float32(zoo: Zoo) -> None:
    entry = zoo.entries["py-tensor-f32"]
    expected = (np.asarray(entry.tensor, dtype=np.float32).sum(axis=1) * np.float32(1.5)).tolist()
    assert answer(entry, "inputs").body == {"predictions": expected}
    assert expected != (np.asarray(entry.tensor).sum(axis=1) * 1.5).tolist()  # float64 would differ


def test_json_diff_is_exact() -> None:
    assert json_diff({"a": [1.0, float("nan")]}, {"a": [1.0, float("nan")]}) is None
    assert json_diff([1], [1.0]) == "$[0]: 1 != 1.0"
    assert json_diff([True], [1]) is not None
    assert json_diff([0.1 + 0.2], [0.3]) is not None
    assert json_diff({"a": 1}, {"b": 1}) is not None
    assert json_diff(pd.Series([1.5]).tolist(), [1.5]) is None
    assert json_diff([None, None], [float("nan"), float("-inf")]) is not None
    assert json_diff([None, None], [float("nan"), float("-inf")], non_finite_as_null=True) is None
    assert json_diff([None], [1.0], non_finite_as_null=True) is not None


def test_non_finite_outputs_are_bare_json_tokens(zoo: Zoo) -> None:
    """MLflow writes NaN and Infinity as the bare (non-standard) JSON tokens, not as null."""
    got = answer(zoo.entries["py-nan-output"], "dataframe_split")
    assert got.status == 200
    assert json_diff(got.body, {"predictions": [[2.0, 0.25], [np.nan, -1.0], [0.0, np.inf]]}) is None
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(np.array([np.nan, np.inf]), out)
    assert out.getvalue() == '{"predictions": [NaN, Infinity]}'


# ---- the trainer's intent where MLflow is wrong (what our server must answer there) -------------


@pytest.mark.parametrize("key", sorted(KNOWN_MLFLOW_DIFFERENCES), ids="/".join)
def test_every_known_difference_has_an_intended_answer(zoo: Zoo, key: tuple[str, str]) -> None:
    name, form = key
    entry = zoo.entries[name]
    rows = [i for i in range(size(entry)) if None in (entry.rows or [{}])[i].values()][:1] or [0]
    if form == "rows alone":
        got = intended_answer(entry, entry.forms[0], rows=rows)
        whole = intended_answer(entry, entry.forms[0])
        assert got.body["predictions"] == [whole.body["predictions"][rows[0]]]
    else:
        got = intended_answer(entry, form)
        assert n_rows(got.body["predictions"]) == size(entry)
    assert got.status == 200


def test_intended_null_string_alone_is_nan(zoo: Zoo) -> None:
    entry = zoo.entries["sk-optional-string"]
    raw = load_reference_model(entry).get_raw_model()
    frame = entry.frame([entry.rows[2]]).astype({"plan": object})
    frame["plan"] = np.nan
    assert intended_answer(entry, "dataframe_split", rows=[2]).body == {
        "predictions": raw.predict(frame).tolist()
    }
    assert answer(pick(entry, [2]), "dataframe_split").body != {"predictions": raw.predict(frame).tolist()}


def test_intended_optional_long_reads_null_as_missing(zoo: Zoo) -> None:
    entry = zoo.entries["py-optional-long"]
    # With a null the column is float64 (NaN), so 2**53 + 1 reaches the model as 2**53.
    assert intended_answer(entry, "inputs").body == {"predictions": [6.0, -1.0, -2.0 + float(2**53 + 1)]}
    assert float(2**53 + 1) == 2**53


def test_intended_lightgbm_category_restores_the_category(zoo: Zoo) -> None:
    entry = zoo.entries["lgbm-category"]
    raw = load_reference_model(entry).get_raw_model()
    expected = raw.predict(entry.frame()).tolist()
    assert intended_answer(entry, "dataframe_records").body == {"predictions": expected}
    assert answer(entry, "dataframe_records").status == 400
