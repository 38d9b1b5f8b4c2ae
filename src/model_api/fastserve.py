"""The compiled fast path (`model_api.fastpath`) wired behind the predictor, on the contract path.

At load, `attach_fast_path` compiles the raw estimator against the model's contract and checks it
against the model itself on `fast_path_check_rows` rows (its split thresholds, one float32 step
either side, NaN, categories, random rows); it serves only when every label and probability bit
is equal, and otherwise logs one line saying why and leaves the model serving as before.

`Predictor.predict_fast` is what a request runs when it does: the validated columns of a `Batch` straight
into numpy arrays (no DataFrame), the compiled preprocessing and tree walk, in the calling thread.
It takes ~0.4-1.6 ms for up to `INLINE_MAX_ROWS` rows on the demo forest, less than the hand-off to a
model thread costs, so the predictors run it on the event loop (see `predictor.py`, `batching.py`).
A request the model would refuse (see `FastPath`) is not answered here: it goes to the model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from model_api.contract import Batch, InputSchema
from model_api.fastpath import ColumnSpec, FastPath, build_fast_path
from model_api.metrics import Metrics
from model_api.settings import Settings

if TYPE_CHECKING:
    from model_api.predictor import Predictor

logger = logging.getLogger(__name__)

INLINE_MAX_ROWS = 256
"""Largest batch the fast path answers on the event loop; larger ones run in a model thread.
Measured on the demo forest (one core, loaded machine): 0.44 ms for 1 row, 0.86 ms for 64,
1.6 ms for 256, 2.3 ms for 512, 4.7 ms for 1024. Above this, the thread pays for itself: eight
clients of 64 rows served ~790-990 req/s with 256 here against ~590-760 with 512 (alternating
runs), as the loop reads the next requests while a thread walks the trees without the GIL.
Those times are `Tree.apply`'s; with the compiled walks (0.26 ms for 64 rows, 1.9 ms for 512),
1024 here against 256 made no difference beyond this machine's noise (64-row requests from 8
clients, alternating wrk runs, 2026-12-01), so the limit stayed."""


def _to_frame(schema: InputSchema) -> Any:
    """The server's own conversion (`InputSchema.to_model_input`) on a dict of column lists."""

    def to_frame(columns: Mapping[str, list[Any]]) -> Any:
        n_rows = len(next(iter(columns.values()))) if columns else 0
        return schema.to_model_input(Batch(dict(columns), n_rows))

    return to_frame


def compile_for(model: Any, schema: InputSchema | None, settings: Settings) -> tuple[FastPath | None, str]:
    """The fast path for `model` served under `schema`, or None and why (one line, no values)."""
    if settings.fast_path == "off":
        return None, "turned off (MODEL_API_FAST_PATH=off)"
    if schema is None:
        return None, "the model takes the pyfunc path (MLflow's own parsing and predict)"
    columns = [ColumnSpec(f.name, f.kind.value) for f in schema.features]
    return build_fast_path(model, columns, _to_frame(schema), n_random=settings.fast_path_check_rows)


def attach_fast_path(predictor: Predictor, settings: Settings, metrics: Metrics) -> None:
    """Build and check the fast path for `predictor`'s model; serve it only when exact. Blocking
    (seconds: the check runs the model on every check row): call it from the loading thread."""
    loaded = predictor.loaded
    fast, reason = compile_for(loaded.model, predictor.schema, settings)
    predictor.fast, predictor.fast_reason = fast, reason
    metrics.fast_path.labels(loaded.name, loaded.version or "").set(1 if fast is not None else 0)
    if fast is not None:
        logger.info("%s version %s: serving the fast path: %s", loaded.name, loaded.version, reason)
    elif settings.fast_path == "off" or predictor.schema is None:
        logger.debug("%s version %s: no fast path: %s", loaded.name, loaded.version, reason)
    else:
        logger.info(
            "%s version %s: serving the model itself, no fast path: %s", loaded.name, loaded.version, reason
        )
