"""`make bench`'s rows for its "different rows" scenario: like the input example, none the same."""

from __future__ import annotations

from tests.bench.bench import different_records


def test_different_records_follow_the_example_and_differ() -> None:
    example = [
        {"tenure": 3, "charges": 20.5, "contract": "monthly"},
        {"tenure": 40, "charges": 99.25, "contract": "two-year"},
    ]
    rows = different_records(example, 2048)
    assert len(rows) == 2048
    assert all(list(r) == ["tenure", "charges", "contract"] for r in rows)
    assert all(type(r["tenure"]) is int and 3 <= r["tenure"] <= 40 for r in rows)  # type: ignore[operator]
    assert all(type(r["charges"]) is float and 20.5 <= r["charges"] <= 99.25 for r in rows)  # type: ignore[operator]
    assert {r["contract"] for r in rows} == {"monthly", "two-year"}
    assert len({tuple(r.values()) for r in rows}) > 2000  # nearly all different
    assert different_records(example, 50) == different_records(example, 50)  # the same every run
