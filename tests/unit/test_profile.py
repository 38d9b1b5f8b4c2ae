"""The reference profile from the demo's training table and its fitted encoder, and observe()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_api.demo import build_pipeline, make_churn_table
from model_api.profile import FeatureCounts, Profile, build_profile, observe


def test_profile_of_the_training_table_holds_ranges_and_categories() -> None:
    frame, _ = make_churn_table(300)
    profile = build_profile(frame)
    assert set(profile.numeric) == {
        "tenure_months", "monthly_charges", "total_charges", "support_calls", "num_services", "age",
    }  # fmt: skip
    assert profile.numeric["age"] == (float(frame["age"].min()), float(frame["age"].max()))
    assert profile.numeric["monthly_charges"][1] == float(frame["monthly_charges"].max())
    assert profile.categorical["contract"] == frozenset(frame["contract"])
    assert profile.categorical["paperless_billing"] == {"yes", "no"}


def test_the_fitted_encoders_categories_win_over_the_example() -> None:
    frame, churned = make_churn_table(300)
    pipeline = build_pipeline(n_trees=3).fit(frame, churned)
    encoder = pipeline.named_steps["features"].named_transformers_["categorical"]
    names = pipeline.named_steps["features"].transformers_[1][2]
    categories = {name: list(cats) for name, cats in zip(names, encoder.categories_, strict=True)}
    example = frame.head(3)  # MLflow's input example: a few rows, not every category
    profile = build_profile(example, categories)
    assert profile.categorical["payment_method"] == frozenset(frame["payment_method"])
    assert len(profile.categorical["payment_method"]) == 4
    assert "tenure_months" in profile.numeric
    counts = observe(profile, {"payment_method": [frame["payment_method"].iloc[i] for i in range(300)]})
    assert counts["payment_method"] == FeatureCounts(0, 0, 0)


def test_observe_counts_missing_unknown_and_out_of_range() -> None:
    profile = Profile(
        numeric={"tenure": (1.0, 72.0), "charges": (18.0, 120.0), "age": (18.0, 84.0)},
        categorical={
            "contract": frozenset({"month-to-month", "one-year", "two-year"}),
            "paperless": frozenset({True, False}),
        },
    )
    columns = {
        "tenure": [1, 72, 73, 0, None, 12],  # 73 above, 0 below, one missing
        "charges": np.array([18.0, math.nan, 120.5, 50.0, 60.0, 70.0]),  # one NaN, one above
        "contract": ["one-year", "weekly", None, "two-year", "WEEKLY", float("nan")],
        "paperless": [True, False, True, "yes", None, np.bool_(True)],
        # "age" is absent: every row missing
    }
    counts = observe(profile, columns)
    assert counts == {
        "tenure": FeatureCounts(missing=1, unknown=0, out_of_range=2),
        "charges": FeatureCounts(missing=1, unknown=0, out_of_range=1),
        "age": FeatureCounts(missing=6, unknown=0, out_of_range=0),
        "contract": FeatureCounts(missing=2, unknown=2, out_of_range=0),
        "paperless": FeatureCounts(missing=1, unknown=1, out_of_range=0),
    }


@pytest.mark.parametrize("repeat", [1, 20])  # 5 values: the plain Python path; 100: numpy's
def test_values_of_the_wrong_kind_are_unknown_not_errors(repeat: int) -> None:
    profile = Profile(numeric={"x": (0.0, 1.0)}, categorical={"c": frozenset({"a"})})
    x = [0.5, "0.5", True, None, 2.0, math.nan] * repeat
    c = ["a", ["a"], {"k": 1}, None, "b", "a"] * repeat
    counts = observe(profile, {"x": x, "c": c})
    assert counts["x"] == FeatureCounts(missing=2 * repeat, unknown=2 * repeat, out_of_range=repeat)
    assert counts["c"] == FeatureCounts(missing=repeat, unknown=3 * repeat, out_of_range=0)
    numbers = observe(profile, {"x": [-1.0, 0.0, 1.0, None, 3] * repeat})
    assert numbers["x"] == FeatureCounts(missing=repeat, unknown=0, out_of_range=2 * repeat)


def test_no_columns_counts_nothing() -> None:
    profile = Profile(numeric={"x": (0.0, 1.0)}, categorical={"c": frozenset({"a"})})
    assert observe(profile, {}) == {"x": FeatureCounts(0, 0, 0), "c": FeatureCounts(0, 0, 0)}


def test_integer_numpy_columns_and_empty_numeric_columns() -> None:
    profile = build_profile({"n": [None, None], "k": [3, 5], "s": ["a", None]})
    assert "n" not in profile.numeric and "n" not in profile.categorical  # nothing to compare with
    assert profile.numeric == {"k": (3.0, 5.0)}
    assert profile.categorical == {"s": frozenset({"a"})}
    assert observe(profile, {"k": np.array([2, 3, 5, 6], dtype=np.int64), "s": ["a", "a", "b", None]}) == {
        "k": FeatureCounts(0, 0, 2),
        "s": FeatureCounts(1, 1, 0),
    }


def test_profile_round_trips_through_json() -> None:
    frame, _ = make_churn_table(100)
    profile = build_profile(frame)
    again = Profile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile
    assert set(again.features) == set(frame.columns)


@pytest.mark.parametrize(
    "data",
    [{"numeric": {"x": [2.0, 1.0]}}, {"numeric": {"x": "wide"}}, {"numeric": []}, {"categorical": {"c": 3}}],
)
def test_a_malformed_profile_artifact_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not a reference profile"):
        Profile.from_dict(data)


def _objects(values: list[object]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@pytest.mark.parametrize("seed", range(40))
def test_long_lists_counted_at_once_or_value_by_value_agree(seed: int) -> None:
    """Lists longer than SMALL are first tested whole (every value known, or every number in range);
    an object array of the same values is always counted value by value: both must agree."""
    rng = np.random.default_rng(seed)
    profile = Profile(numeric={"x": (0.0, 10.0)}, categorical={"c": frozenset({"a", "b"})})
    numbers: list[object] = [0, 10, 5.5, 3, 9.999]
    categories: list[object] = ["a", "b"]
    # from seed 20 on, one odd value: missing, unknown, out of range, of the wrong kind, unhashable
    odd: list[object] = [None, math.nan, -0.1, 10.5, True, "7", "z", ["a"], 1e308, -math.inf]
    n = int(rng.integers(33, 200))
    xs = [numbers[i] for i in rng.integers(0, len(numbers), n)]
    cs = [categories[i] for i in rng.integers(0, len(categories), n)]
    if seed >= 20:
        value = odd[seed % len(odd)]
        xs[int(rng.integers(0, n))] = value
        cs[int(rng.integers(0, n))] = value
    fast = observe(profile, {"x": xs, "c": cs})
    slow = observe(profile, {"x": _objects(xs), "c": _objects(cs)})
    assert fast == slow, (seed, fast, slow)
    if seed < 20:
        assert fast == {"x": FeatureCounts(0, 0, 0), "c": FeatureCounts(0, 0, 0)}
    else:
        assert fast != {"x": FeatureCounts(0, 0, 0), "c": FeatureCounts(0, 0, 0)}


@pytest.mark.parametrize("seed", range(20))
def test_long_lists_with_values_out_of_range_are_counted_exactly(seed: int) -> None:
    """A long list of plain numbers, many outside the range, is counted by sorting it: the same
    counts as value by value, on the bounds themselves, a float step either side, ints and floats."""
    rng = np.random.default_rng(seed)
    low, high = -2.5, 10.0
    pool: list[object] = [
        low, high, -2, 10, 0, 7.25, math.nextafter(low, -math.inf), math.nextafter(high, math.inf),
        math.nextafter(low, 0.0), math.nextafter(high, 0.0), -3, 11, 2**60, -(2**60), 1e308, math.inf,
        -math.inf,
    ]  # fmt: skip
    n = int(rng.integers(33, 300))
    xs = [pool[i] for i in rng.integers(0, len(pool) - int(seed % 2 == 0), n)]  # even seeds: no -inf
    profile = Profile(numeric={"x": (low, high)})
    fast = observe(profile, {"x": xs})
    slow = observe(profile, {"x": _objects(xs)})
    expected = sum(1 for x in xs if x < low or x > high)  # type: ignore[operator]
    assert fast == slow == {"x": FeatureCounts(0, 0, expected)}, (seed, fast, slow)


def test_a_known_missing_category_is_still_counted_missing() -> None:
    """None or NaN among the known categories (a profile from a table with gaps): not taken as known."""
    for gap in (None, math.nan):
        profile = Profile(numeric={}, categorical={"c": frozenset({"a", gap})})
        values: list[object] = ["a"] * 40 + [gap, gap]
        assert observe(profile, {"c": values})["c"] == FeatureCounts(2, 0, 0), gap
