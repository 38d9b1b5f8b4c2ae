from __future__ import annotations

import pandas as pd

from model_api.demo import CATEGORICAL, NUMERIC, make_churn_table


def test_table_is_deterministic() -> None:
    a, la = make_churn_table(500, seed=7)
    b, lb = make_churn_table(500, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert la.equals(lb)


def test_table_has_named_numeric_and_categorical_features() -> None:
    frame, label = make_churn_table(300)
    assert list(frame.columns) == NUMERIC + CATEGORICAL
    assert len(frame.columns) == 10 and set(label.unique()) == {0, 1}


def test_churn_depends_on_the_features_as_real_churn_does() -> None:
    frame, label = make_churn_table(6000)
    rate = label.groupby(frame["contract"]).mean()
    assert rate["month-to-month"] > 2 * rate["two-year"]
    short = label[frame["tenure_months"] < 12].mean()
    long = label[frame["tenure_months"] > 48].mean()
    assert short > long
    calls = label.groupby(frame["support_calls"].clip(upper=4)).mean()
    assert calls[4] > calls[0]
    assert 0.15 < label.mean() < 0.6
