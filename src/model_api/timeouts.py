"""The per-request timeout around a prediction: a request that waits too long is answered 504 and let go.

Cancelling the wait cancels the request's own future: the micro-batcher then skips it if its batch
has not started, and a plain predictor's queued call is dropped before it reaches a model thread.
A batch already running in a model thread runs to its end (threads cannot be interrupted), so a
timed-out request holds a model thread no longer than its batch.
"""

from __future__ import annotations

import asyncio

from model_api.errors import RequestTimeout
from model_api.predictor import Prediction, Predictor
from model_api.schemas import Batch


async def predict_within(
    predictor: Predictor, batch: Batch, probabilities: bool, timeout_s: float
) -> Prediction:
    """`predictor.predict(batch, probabilities)`, or RequestTimeout after `timeout_s` seconds."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await predictor.predict(batch, probabilities)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise RequestTimeout(
            f"the prediction took longer than the {timeout_s:g}s timeout; quote the request id"
        ) from None
