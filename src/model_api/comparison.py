"""Comparing a champion's and a challenger's answers for the shadow (`shadow.py`): pure functions.

`predict_each` scores several parsed requests in one model call where the predictor's rows merge
exactly; `agreement` counts equal labels row by row; `probability_difference` gives, per row, the
mean absolute difference of two models' class probabilities over the classes both know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model_api.contract import Batch
from model_api.inputs import ModelInput
from model_api.predictor import Prediction, Predictor


def predict_each(predictor: Predictor, inputs: Sequence[ModelInput], probabilities: bool) -> list[Prediction]:
    """One prediction per input: in one model call where the predictor's rows are exact merged
    (contract-path trees), else one call each. Raises what `predict_sync` raises."""
    if len(inputs) > 1 and predictor.merges_rows and all(isinstance(i, Batch) for i in inputs):
        batches = [i for i in inputs if isinstance(i, Batch)]
        merged = predictor.predict_sync(Batch.concat(batches), probabilities)
        answers, start = [], 0
        for batch in batches:
            answers.append(merged.slice(start, start + batch.n_rows))
            start += batch.n_rows
        return answers
    return [predictor.predict_sync(i, probabilities) for i in inputs]


def agreement(champion: Any, challenger: Any) -> tuple[int, int]:
    """(equal, compared): row by row for two lists of one label a row of the same length; else
    the two answers as a whole count as one row."""
    if isinstance(champion, list) and isinstance(challenger, list) and len(champion) == len(challenger):
        return sum(1 for a, b in zip(champion, challenger, strict=True) if a == b), len(champion)
    return int(champion == challenger), 1


def probability_difference(
    first: np.ndarray, first_classes: list[Any], second: np.ndarray, second_classes: list[Any]
) -> np.ndarray:
    """Per row, the mean absolute difference of two probability arrays [rows, classes] over the
    classes both models know (an empty array when they share none or the rows differ)."""
    common = [c for c in first_classes if c in second_classes]
    if not common or first.shape[0] != second.shape[0]:
        return np.empty(0)
    a = first[:, [first_classes.index(c) for c in common]]
    b = second[:, [second_classes.index(c) for c in common]]
    difference: np.ndarray = np.abs(a - b).mean(axis=1)
    return difference
