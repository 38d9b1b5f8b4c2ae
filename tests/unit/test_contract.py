"""The input contract: records, rows and columns against the model's columns, into one batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from model_api.api.predict import parse_predict
from model_api.contract import Batch, InputSchema
from model_api.errors import InvalidInput, TooManyRows
from model_api.features import Feature, Kind
from model_api.registry import LoadedModel
from model_api.signature import build_input_schema
from model_api.values import Faults, RowCheck, check_column


@pytest.fixture(scope="module")
def schema(champion: LoadedModel) -> InputSchema:
    return build_input_schema(champion.model, champion.signature, champion.input_example)


def row(schema: InputSchema, **overrides: Any) -> dict[str, Any]:
    out = dict(schema.example[0])
    out.update(overrides)
    return out


def details(err: pytest.ExceptionInfo[InvalidInput]) -> list[dict[str, Any]]:
    return [d.to_dict() for d in err.value.details]


def test_records_and_rows_give_the_same_batch(schema: InputSchema) -> None:
    records = [dict(r) for r in schema.example]
    rows = [[r[n] for n in schema.names] for r in records]
    a = schema.parse_records(records, 10)
    b = schema.parse_rows(rows, 10)
    assert a.columns == b.columns and a.n_rows == b.n_rows == len(records)


def test_integral_floats_are_accepted_for_integer_features(schema: InputSchema) -> None:
    batch = schema.parse_records([row(schema, tenure_months=12.0)], 10)
    assert batch.columns["tenure_months"] == [12] and type(batch.columns["tenure_months"][0]) is int


def test_ints_are_accepted_for_double_features(schema: InputSchema) -> None:
    batch = schema.parse_records([row(schema, monthly_charges=70)], 10)
    assert batch.columns["monthly_charges"] == [70]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"tenure_months": "ten"}, "tenure_months", "expected an integer"),
        ({"tenure_months": 1.5}, "tenure_months", "expected an integer"),
        ({"tenure_months": True}, "tenure_months", "expected an integer"),
        ({"tenure_months": 2**70}, "tenure_months", "out of range"),
        # What orjson makes of an integer literal beyond int64: a float, rounded to exactly -2**63.
        ({"tenure_months": float(-(2**63) - 1)}, "tenure_months", "expected an integer"),
        ({"monthly_charges": "70"}, "monthly_charges", "expected a number"),
        ({"monthly_charges": None}, "monthly_charges", "expected a number"),
        ({"monthly_charges": math.nan}, "monthly_charges", "finite"),
        ({"monthly_charges": math.inf}, "monthly_charges", "finite"),
        # Beyond float32: the forest would see infinity and raise (a 500); it is the input's fault.
        ({"monthly_charges": 1e308}, "monthly_charges", "within"),
        ({"monthly_charges": -(10**39)}, "monthly_charges", "within"),
        ({"monthly_charges": [1.0]}, "monthly_charges", "expected a number"),
        ({"contract": 3}, "contract", "expected a string"),
        ({"contract": "weekly"}, "contract", "unknown category"),
    ],
)
def test_bad_values_name_row_and_field(
    schema: InputSchema, overrides: dict[str, Any], field: str, message: str
) -> None:
    good = row(schema)
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([good, row(schema, **overrides)], 10)
    [detail] = details(err)
    assert detail["row"] == 1 and detail["field"] == field and message in detail["message"]


def test_unknown_category_message_lists_what_the_model_knows(schema: InputSchema) -> None:
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([row(schema, contract="weekly")], 10)
    text = details(err)[0]["message"]
    assert "month-to-month" in text and "weekly" not in text, "no echo of the input"


def test_missing_and_unknown_features(schema: InputSchema) -> None:
    bad = row(schema, colour="red")
    del bad["age"]
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([bad], 10)
    found = {(d["field"], d["message"]) for d in details(err)}
    assert found == {("age", "missing feature"), ("colour", "unknown feature")}


def test_a_record_with_every_feature_and_one_more_is_refused(schema: InputSchema) -> None:
    # all features present (the columns are picked whole), but one key besides: counted, refused
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([row(schema), row(schema, colour="red")], 10)
    assert [(d["row"], d["field"], d["message"]) for d in details(err)] == [(1, "colour", "unknown feature")]


def test_records_of_one_feature_and_with_an_optional_one_absent() -> None:
    one = InputSchema((Feature("x", Kind.DOUBLE),))
    assert one.parse_records([{"x": 1.5}, {"x": 2}], 10).columns == {"x": [1.5, 2]}
    with pytest.raises(InvalidInput):
        one.parse_records([{"x": 1.5, "y": 1}], 10)
    two = InputSchema((Feature("x", Kind.DOUBLE), Feature("y", Kind.STRING, required=False)))
    batch = two.parse_records([{"x": 1.0, "y": "a"}, {"x": 2.0}], 10)
    assert batch.columns["x"] == [1.0, 2.0] and batch.columns["y"][0] == "a"
    assert math.isnan(batch.columns["y"][1])


def test_wrong_row_width_names_the_expected_order(schema: InputSchema) -> None:
    with pytest.raises(InvalidInput) as err:
        schema.parse_rows([[1, 2, 3]], 10)
    [detail] = details(err)
    assert (
        detail["row"] == 0
        and "expected 10 values" in detail["message"]
        and "tenure_months" in detail["message"]
    )


@pytest.mark.parametrize("rows", [[], "x", {"a": 1}, None])
def test_rows_must_be_a_non_empty_list(schema: InputSchema, rows: Any) -> None:
    with pytest.raises(InvalidInput):
        schema.parse_records(rows, 10)


@pytest.mark.parametrize("value", [None, 3, "row", [1]])
def test_each_record_must_be_an_object(schema: InputSchema, value: Any) -> None:
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([row(schema), value], 10)
    assert details(err)[0]["row"] == 1


def test_too_many_rows(schema: InputSchema) -> None:
    with pytest.raises(TooManyRows):
        schema.parse_records([row(schema)] * 3, 2)


def test_error_list_is_bounded(schema: InputSchema) -> None:
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([row(schema, age="x")] * 500, 1000)
    assert len(err.value.details) == 10 and "first 10" in err.value.message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "JSON object"),
        ({}, "exactly one"),
        ({"instances": [], "features": []}, "exactly one"),
        ({"instances": [{}], "extra": 1}, "unknown top-level"),
        ({"features": [[1]], "return_probabilities": "yes"}, "true or false"),
    ],
)
def test_request_shape(schema: InputSchema, payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_predict(payload)


def test_to_model_input_uses_signature_dtypes(schema: InputSchema) -> None:
    frame = schema.to_model_input(schema.parse_records([dict(r) for r in schema.example], 10))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(schema.names)
    assert frame["tenure_months"].dtype == np.int64 and frame["monthly_charges"].dtype == np.float64


def test_batches_concatenate_in_order(schema: InputSchema) -> None:
    a = schema.parse_records([row(schema, age=20)], 10)
    b = schema.parse_records([row(schema, age=30), row(schema, age=40)], 10)
    merged = Batch.concat([a, b])
    assert merged.n_rows == 3 and merged.columns["age"] == [20, 30, 40]


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "k" * 65, "tenure_mönths", "", "a\nb"])
def test_an_unknown_name_that_is_not_plain_is_not_repeated(schema: InputSchema, name: str) -> None:
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([row(schema, **{name: 1})], 10)
    [detail] = details(err)
    assert "field" not in detail and "not repeated" in detail["message"]
    with pytest.raises(InvalidInput) as err:
        parse_predict({"instances": [row(schema)], name: 1})
    [detail] = details(err)
    assert "field" not in detail and "not repeated" in detail["message"]


def test_a_plain_unknown_name_is_named(schema: InputSchema) -> None:
    with pytest.raises(InvalidInput) as err:
        schema.parse_records([row(schema, favourite_colour="red")], 10)
    assert details(err) == [{"row": 0, "field": "favourite_colour", "message": "unknown feature"}]


# -- which new contracts still accept what clients of the old one send (reloads) ---------------------


def contract_of(*features: Feature) -> InputSchema:
    return InputSchema(tuple(features))


OLD = contract_of(
    Feature("tenure", Kind.LONG),
    Feature("plan", Kind.STRING, categories=("a", "b"), accepts_unknown=False),
    Feature("note", Kind.STRING, required=False),
)


def test_same_contract_is_compatible() -> None:
    assert OLD.breaks_clients_of(OLD) == []


def test_widening_an_integer_to_a_float_is_compatible() -> None:
    new = contract_of(Feature("tenure", Kind.DOUBLE), *OLD.features[1:])
    assert new.breaks_clients_of(OLD) == []


def test_more_categories_are_compatible_fewer_are_not() -> None:
    more = contract_of(
        OLD.features[0],
        Feature("plan", Kind.STRING, categories=("a", "b", "c"), accepts_unknown=False),
        OLD.features[2],
    )
    fewer = contract_of(
        OLD.features[0],
        Feature("plan", Kind.STRING, categories=("a",), accepts_unknown=False),
        OLD.features[2],
    )
    assert more.breaks_clients_of(OLD) == []
    assert fewer.breaks_clients_of(OLD) == ["plan: no longer knows 1 category(ies)"]


def test_breaking_changes_are_named() -> None:
    renamed = contract_of(Feature("months", Kind.LONG), *OLD.features[1:])
    assert "columns changed" in renamed.breaks_clients_of(OLD)[0]
    narrowed = contract_of(Feature("tenure", Kind.STRING), OLD.features[1], Feature("note", Kind.STRING))
    problems = narrowed.breaks_clients_of(OLD)
    assert problems == ["tenure: type long became string", "note: became required"]


BULK_VALUES: dict[Kind, list[Any]] = {
    Kind.DOUBLE: [
        0.5,
        -3,
        2**53 + 1,
        3.0e38,
        -3.4e38,
        3.5e38,
        2**200,
        2**2000,
        True,
        None,
        "1",
        math.nan,
        math.inf,
        -math.inf,
    ],
    Kind.LONG: [7, -(2**63), 2**63 - 1, 2**63, 12.0, 1.5, True, None, "7", 2**53 + 1],
    Kind.INTEGER: [7, -(2**31), 2**31 - 1, 2**31, 3.0, None, False],
    Kind.BOOLEAN: [True, False, None, 1, "true"],
    Kind.STRING: ["a", "b", "zzz", None, 3, ""],
}


@pytest.mark.parametrize("kind", list(BULK_VALUES))
@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize("categories", [None, ("a", "b", "")])
def test_a_long_column_checked_in_bulk_gives_what_value_by_value_gives(
    kind: Kind, required: bool, categories: tuple[str, ...] | None
) -> None:
    """Columns of 40 values (checked in bulk first) against the same values one request each
    (checked value by value): the same values out, the same refusals, row for row."""
    feature = Feature("x", kind, required, categories if kind is Kind.STRING else None, accepts_unknown=False)
    schema = InputSchema((feature,))
    rng = np.random.default_rng(7)
    pool = BULK_VALUES[kind]
    columns = [[pool[0]] * 40] + [[pool[i] for i in rng.integers(0, k, 40)] for k in range(1, len(pool) + 1)]
    for values in columns:
        one_by_one: list[Any] = []
        refused: list[int] = []
        for i, value in enumerate(values):
            try:
                one_by_one += schema.parse_columns({"x": [value]}, 1, 10).columns["x"]
            except InvalidInput:
                refused.append(i)
        if refused:
            with pytest.raises(InvalidInput) as err:
                schema.parse_columns({"x": list(values)}, len(values), 100)
            rows = [d.row for d in err.value.details]
            assert rows == refused[: len(rows)], (kind, values)
        else:
            got = schema.parse_columns({"x": list(values)}, len(values), 100).columns["x"]
            assert len(got) == len(one_by_one)
            for a, b in zip(got, one_by_one, strict=True):
                assert type(a) is type(b) and (a == b or (a != a and b != b)), (kind, a, b)


@pytest.mark.parametrize("kind", list(BULK_VALUES))
@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize(("categories", "accepts_unknown"), [(None, True), (("a", "b", ""), False)])
def test_a_single_row_checked_whole_gives_what_the_column_check_gives(
    kind: Kind, required: bool, categories: tuple[str, ...] | None, accepts_unknown: bool
) -> None:
    """A one-row batch is checked whole (`RowCheck`) and passed as it is only when the column check
    would change nothing and report nothing; otherwise the column check answers, as for any batch."""
    feature = Feature("x", kind, required, categories if kind is Kind.STRING else None, accepts_unknown)
    schema = InputSchema((feature,))
    passed = 0
    for value in [*BULK_VALUES[kind], -0.0, 3.4028234663852886e38, -(2**63) - 1]:
        faults = Faults()
        expected = check_column(feature, [value], faults)
        if RowCheck((feature,))({"x": [value]}):
            passed += 1
            assert not faults.count and expected[0] is value, (kind, value)
        if faults.count:
            with pytest.raises(InvalidInput) as err:
                schema.parse_columns({"x": [value]}, 1, 10)
            assert err.value.details == faults.items, (kind, value)
        else:
            [got] = schema.parse_columns({"x": [value]}, 1, 10).columns["x"]
            assert type(got) is type(expected[0]) and (got == expected[0] or got != got), (kind, value)
    assert passed >= 1, "the whole-row check passed none: the test would not see it"
