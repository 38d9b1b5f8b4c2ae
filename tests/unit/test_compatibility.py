"""Which new input contracts still accept what clients of the old one send."""

from __future__ import annotations

from model_api.contract import Feature, InputSchema, Kind


def schema(*features: Feature) -> InputSchema:
    return InputSchema(tuple(features))


OLD = schema(
    Feature("tenure", Kind.LONG),
    Feature("plan", Kind.STRING, categories=("a", "b"), accepts_unknown=False),
    Feature("note", Kind.STRING, required=False),
)


def test_same_contract_is_compatible() -> None:
    assert OLD.breaks_clients_of(OLD) == []


def test_widening_an_integer_to_a_float_is_compatible() -> None:
    new = schema(Feature("tenure", Kind.DOUBLE), *OLD.features[1:])
    assert new.breaks_clients_of(OLD) == []


def test_more_categories_are_compatible_fewer_are_not() -> None:
    more = schema(
        OLD.features[0],
        Feature("plan", Kind.STRING, categories=("a", "b", "c"), accepts_unknown=False),
        OLD.features[2],
    )
    fewer = schema(
        OLD.features[0],
        Feature("plan", Kind.STRING, categories=("a",), accepts_unknown=False),
        OLD.features[2],
    )
    assert more.breaks_clients_of(OLD) == []
    assert fewer.breaks_clients_of(OLD) == ["plan: no longer knows 1 category(ies)"]


def test_breaking_changes_are_named() -> None:
    renamed = schema(Feature("months", Kind.LONG), *OLD.features[1:])
    assert "columns changed" in renamed.breaks_clients_of(OLD)[0]
    narrowed = schema(Feature("tenure", Kind.STRING), OLD.features[1], Feature("note", Kind.STRING))
    problems = narrowed.breaks_clients_of(OLD)
    assert problems == ["tenure: type long became string", "note: became required"]
