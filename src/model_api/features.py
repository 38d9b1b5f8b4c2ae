"""A model's input column as its signature declares it: its kind, whether it is required, the
categories an encoder knows, and the value limits the model takes (MLflow's ColSpec types)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np


class Kind(StrEnum):
    """A feature's type, as MLflow's signature names it."""

    DOUBLE = "double"
    FLOAT = "float"
    LONG = "long"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"


INT_RANGE = {Kind.LONG: (-(2**63), 2**63 - 1), Kind.INTEGER: (-(2**31), 2**31 - 1)}
NUMBER_LIMIT = float(np.finfo(np.float32).max)
"""Largest magnitude a float feature may have, even a double one: scikit-learn's trees (and many
other estimators) compute in float32, where anything larger is infinity and the model raises."""

_DTYPE = {
    Kind.DOUBLE: np.float64,
    Kind.FLOAT: np.float32,
    Kind.LONG: np.int64,
    Kind.INTEGER: np.int32,
    Kind.BOOLEAN: np.bool_,
    Kind.STRING: object,
}


@dataclass(frozen=True)
class Feature:
    """One input column of the model."""

    name: str
    kind: Kind
    required: bool = True
    categories: tuple[Any, ...] | None = None
    """The values the model knows, when it encodes this column (one-hot or ordinal)."""
    accepts_unknown: bool = True
    """Whether the model copes with a category it has not seen (handle_unknown != 'error')."""

    @functools.cached_property
    def allowed(self) -> frozenset[Any] | None:
        """The only values the column takes (the model refuses a category it does not know), or
        None when any string goes; built once, used by every check of the column."""
        if self.categories is None or self.accepts_unknown:
            return None
        return frozenset(self.categories)

    @property
    def dtype(self) -> Any:
        if not self.required and self.kind in (Kind.LONG, Kind.INTEGER, Kind.BOOLEAN):
            return np.float64 if self.kind is not Kind.BOOLEAN else object
        return _DTYPE[self.kind]
