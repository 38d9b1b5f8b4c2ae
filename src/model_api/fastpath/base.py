"""The shared pieces of the compiled preprocessing: columns, steps, origins and the two exceptions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Cols = list[np.ndarray]
Inverse = Callable[[np.ndarray], np.ndarray]


class Unsupported(Exception):
    """The model holds a step the fast path cannot reproduce exactly (the message says which)."""


class Fallback(Exception):
    """This request needs the model itself (it will raise the model's own error)."""


@dataclass(frozen=True)
class Origin:
    """Where an output column comes from: an input column, and how to map a value back to it."""

    column: int
    inverse: Inverse | None
    """Output value -> input value, when the column is an invertible (affine) image of the input."""
    categories: tuple[Any, ...] = ()
    """The categories an encoder knows for this input column (where an encoder made it)."""


Origins = list[Origin | None]


@dataclass(frozen=True)
class Step:
    """A compiled transformer: `run(columns) -> columns`, and each output column's origin."""

    run: Callable[[Cols], Cols]
    origins: Origins


def float_dtype(cols: Cols) -> np.dtype[Any]:
    """The dtype `check_array(dtype=FLOAT_DTYPES)` gives these columns: float32 only if all are."""
    if cols and all(c.dtype == np.float32 for c in cols):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def stack(cols: Cols, dtype: np.dtype[Any]) -> np.ndarray:
    out = np.empty((len(cols[0]), len(cols)), dtype=dtype)
    for j, c in enumerate(cols):
        out[:, j] = c
    return out
