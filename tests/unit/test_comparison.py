"""comparison.py: the shadow's comparison of two answers, label by label and by probability."""

from __future__ import annotations

import numpy as np
import pytest

from model_api.comparison import agreement, probability_difference


def test_agreement_row_by_row_or_as_a_whole() -> None:
    assert agreement([0, 1, 1, 0], [0, 1, 0, 0]) == (3, 4)
    assert agreement([0, 1], [0]) == (0, 1)  # not comparable row by row: one answer, different
    assert agreement({"a": [1]}, {"a": [1]}) == (1, 1)


def test_probability_difference_over_the_classes_both_know() -> None:
    first = np.array([[0.9, 0.1], [0.4, 0.6]])
    second = np.array([[0.2, 0.7, 0.1], [0.6, 0.0, 0.4]])  # classes in another order, one more
    difference = probability_difference(first, [0, 1], second, [1, 2, 0])
    assert difference.tolist() == pytest.approx([(abs(0.9 - 0.1) + abs(0.1 - 0.2)) / 2, (0.0 + 0.0) / 2])
    assert probability_difference(first, ["a", "b"], second, [0, 1, 2]).size == 0
