"""The compiled fast path (`model_api.fastpath`) wired behind the predictor, on the contract path.

At load, `attach_fast_path` compiles the raw estimator against the model's contract and checks it
against the model itself on `fast_path_check_rows` rows (its split thresholds, one float32 step
either side, NaN, categories, random rows); it serves only when every label and probability bit
is equal, and otherwise logs one line saying why and leaves the model serving as before.

`Predictor.predict_fast` is what a request runs when it does: the validated columns of a `Batch` straight
into numpy arrays (no DataFrame), the compiled preprocessing and tree walk, in the calling thread.
It takes ~0.06-2 ms for up to `INLINE_MAX_ROWS` rows on the demo forest, and the hand-off to a
model thread costs more than it saves, so the predictors run it on the event loop (see
`predictor.py`, `batching.py`).
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

INLINE_MAX_ROWS = 1024
"""Largest batch the fast path answers on the event loop (`batch_max_rows`' default: every batch
the batcher forms); larger ones run in a model thread. The hand-off to a thread and the loop's
wake-up from it cost more than the walk saves by running beside the loop, on a worker with one
core (one worker per core, as `deploy/` runs it): the two threads take turns on that core and
evict each other's caches. Measured 2026-12-03, one worker on one core, 64-row requests from 8
clients (batches of about 450 rows), alternating wrk runs: 64 different rows a request 1,181 ->
1,284 req/s over eight rounds and 1,228 -> 1,300 over six; the same 64 rows 1,387 -> 1,531 over
six; p99 alike. With the tree walks of `Tree.apply`, 256 here served ~790-990 req/s against
~590-760 with 512 (the walk took 2.3 ms for 512 rows then, 1.1 ms now)."""


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
