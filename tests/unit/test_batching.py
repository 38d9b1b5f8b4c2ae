"""The micro-batcher on the real demo model: merging, ordering, isolation of failures, draining."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvloop

from model_api.batching import MicroBatcher
from model_api.contract import InputSchema
from model_api.demo import make_churn_table
from model_api.errors import ModelNotReady, PredictionFailed
from model_api.fastserve import INLINE_MAX_ROWS, compile_for
from model_api.metrics import Metrics
from model_api.predictor import Prediction
from model_api.registry import LoadedModel
from model_api.settings import Settings
from model_api.signature import model_spec


class Recording:
    """The real model, recording the size of every call and failing calls that hold a poison row."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_
        self.calls: list[int] = []

    def predict(self, frame: pd.DataFrame) -> Any:
        self.calls.append(len(frame))
        if (frame["age"] == 99).any():
            raise RuntimeError("poisoned batch")
        return self.inner.predict(frame)

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        return self.inner.predict_proba(frame)


@pytest.fixture
def model(champion: LoadedModel) -> Recording:
    return Recording(champion.model)


def batcher(
    champion: LoadedModel, model: Recording, max_rows: int = 64, threads: int = 1, max_wait_s: float = 0.002
) -> MicroBatcher:
    spec = model_spec(champion)
    loaded = LoadedModel(**{**champion.__dict__, "model": model})
    b = MicroBatcher(
        loaded, spec, threads=threads, metrics=Metrics(), max_rows=max_rows, max_wait_s=max_wait_s
    )
    assert not b.merges_rows, "the recording wrapper hides the forest"
    b.merges_rows = True  # the forest inside answers each row alone, merged or not
    return b


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    frame, _ = make_churn_table(n, seed=seed)
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def parse(schema: InputSchema, records: list[dict[str, Any]]) -> Any:
    return schema.parse_records(records, 10_000)


def test_concurrent_mixed_requests_each_get_their_own_rows(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model, max_rows=64)
    rng = random.Random(3)
    requests = [rows(rng.randint(1, 12), seed=i) for i in range(120)]
    wants = [rng.random() < 0.5 for _ in requests]

    async def main() -> list[Prediction]:
        return await asyncio.gather(
            *(b.predict(parse(b.schema, r), w) for r, w in zip(requests, wants, strict=True))
        )

    results = asyncio.run(main())
    b.close()
    assert len(model.calls) < len(requests) / 4, "concurrent requests share model calls"
    assert max(model.calls) <= 64
    for records, want, result in zip(requests, wants, results, strict=True):
        alone = pd.DataFrame(records)[list(b.schema.names)]
        assert result.labels == champion.model.predict(alone).tolist()
        if want:
            assert result.probabilities is not None
            expected = champion.model.predict_proba(alone)
            got = result.probabilities
            assert np.allclose(got, expected)
        else:
            assert result.probabilities is None


def test_a_lone_request_is_dispatched_alone(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model)
    result = asyncio.run(b.predict(parse(b.schema, rows(3, seed=1)), False))
    b.close()
    assert model.calls == [3] and len(result.labels) == 3


def test_a_model_error_fails_only_its_own_request(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model, max_rows=4)
    poisoned = rows(2, seed=1)
    poisoned[0]["age"] = 99
    batches = [poisoned, rows(2, seed=2), rows(2, seed=3), rows(2, seed=4)]

    async def main() -> list[Any]:
        calls = [b.predict(parse(b.schema, r), False) for r in batches]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    b.close()
    # Two batches of two requests; the failed one is split and retried request by request.
    assert model.calls == [4, 2, 2, 4]
    assert isinstance(results[0], PredictionFailed)
    assert isinstance(results[0].__cause__, RuntimeError)
    assert all(isinstance(r, Prediction) for r in results[1:]), "its batch mate is answered"
    alone = pd.DataFrame(batches[1])[list(b.schema.names)]
    assert results[1].labels == champion.model.predict(alone).tolist()


def test_each_failing_request_gets_its_own_error(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model, max_rows=8)
    batches = [rows(2, seed=i) for i in range(4)]
    batches[0][1]["age"] = 99
    batches[3][0]["age"] = 99

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(b.predict(parse(b.schema, r), False) for r in batches), return_exceptions=True
        )

    results = asyncio.run(main())
    b.close()
    assert model.calls[0] == 8 and len(model.calls) <= 7, "halving, not one call per request"
    assert isinstance(results[0], PredictionFailed) and isinstance(results[3], PredictionFailed)
    assert results[0] is not results[3], "each request gets its own error"
    assert isinstance(results[1], Prediction) and isinstance(results[2], Prediction)


def test_a_request_larger_than_the_batch_runs_alone(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model, max_rows=4)

    async def main() -> list[Prediction]:
        return await asyncio.gather(
            b.predict(parse(b.schema, rows(2, seed=1)), False),
            b.predict(parse(b.schema, rows(10, seed=2)), False),
            b.predict(parse(b.schema, rows(2, seed=3)), False),
        )

    results = asyncio.run(main())
    b.close()
    assert model.calls == [2, 10, 2]
    assert [len(r.labels) for r in results] == [2, 10, 2]


def test_drain_answers_queued_work_and_refuses_new(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model, max_rows=2)

    async def main() -> tuple[list[Prediction], BaseException | None]:
        queued = [asyncio.ensure_future(b.predict(parse(b.schema, rows(2, seed=i)), False)) for i in range(5)]
        await asyncio.sleep(0)
        await b.drain()
        assert all(f.done() for f in queued)
        refused: BaseException | None = None
        try:
            await b.predict(parse(b.schema, rows(1, seed=9)), False)
        except ModelNotReady as exc:
            refused = exc
        return [f.result() for f in queued], refused

    answered, refused = asyncio.run(main())
    b.close()
    assert len(answered) == 5 and isinstance(refused, ModelNotReady)


def test_after_concurrent_batches_a_free_model_waits_for_the_round(
    champion: LoadedModel, model: Recording
) -> None:
    b = batcher(champion, model, max_rows=64, max_wait_s=5.0)

    async def main() -> None:
        # A round of 4 concurrent requests teaches the batcher its clients' concurrency ...
        await asyncio.gather(*(b.predict(parse(b.schema, rows(1, seed=i)), False) for i in range(4)))
        # ... so the next round, arriving one request per loop turn, still shares one call. (The
        # inputs are built first: building one takes milliseconds, and the wait for companions is
        # capped by the last call's duration, a few milliseconds too.)
        inputs = [parse(b.schema, rows(1, seed=10 + i)) for i in range(4)]
        pending = []
        for batch in inputs:
            pending.append(asyncio.ensure_future(b.predict(batch, False)))
            await asyncio.sleep(0)
        await asyncio.gather(*pending)

    asyncio.run(main())
    b.close()
    assert model.calls == [4, 4]


def test_a_wait_for_companions_shorter_than_a_timer_tick_does_not_spin_the_loop(
    champion: LoadedModel, model: Recording
) -> None:
    """uvloop's timers count whole milliseconds: a shorter wait runs at the next loop turn, before
    its deadline. The batch then goes; it used to re-arm the wait until the clock passed the
    deadline, calling the dispatcher on every turn of the loop meanwhile."""
    b = batcher(champion, model, max_rows=64, max_wait_s=5.0)
    dispatches = []
    dispatch = b._dispatch

    def counted(*waited: bool) -> None:
        dispatches.append(any(waited))
        dispatch(*waited)

    b._dispatch = counted  # type: ignore[method-assign]

    async def main() -> None:
        await asyncio.gather(*(b.predict(parse(b.schema, rows(1, seed=i)), False) for i in range(4)))
        dispatches.clear()
        b._last_call_s = 0.0004  # a fast model: the wait for companions is under a millisecond
        await asyncio.wait_for(b.predict(parse(b.schema, rows(1, seed=7)), False), 30)

    uvloop.run(main())
    b.close()
    assert model.calls == [4, 1]
    # One dispatch arms the wait, the next sends the batch; the model thread's return asks again.
    assert dispatches == [False, True, False], dispatches


def test_rows_of_a_linear_model_are_not_merged(champion: LoadedModel) -> None:
    """A linear model's BLAS kernels differ by row count (a last-bit change): its requests run
    alone; a forest's rows are merged."""
    from sklearn.linear_model import LogisticRegression

    from model_api.predictor import rows_are_exact_alone

    frame, label = make_churn_table(200, seed=3)
    linear = LogisticRegression(max_iter=500).fit(frame.select_dtypes("number"), label)
    assert rows_are_exact_alone(champion.model)
    assert not rows_are_exact_alone(linear)
    forest = MicroBatcher(
        champion, model_spec(champion), threads=1, metrics=Metrics(), max_rows=64, max_wait_s=0
    )
    try:
        assert forest.merges_rows
    finally:
        forest.close()


def test_the_fast_path_answers_a_batch_on_the_loop_up_to_the_inline_bound(champion: LoadedModel) -> None:
    """A batch of up to INLINE_MAX_ROWS rows is answered by the fast path on the event loop's own
    thread; a larger one in a model thread. Both with the model's own labels."""
    spec = model_spec(champion)
    b = MicroBatcher(champion, spec, threads=1, metrics=Metrics(), max_rows=4096, max_wait_s=0.002)
    fast, reason = compile_for(champion.model, spec.contract, Settings(fast_path_check_rows=1000))
    assert fast is not None, reason
    threads: list[int] = []
    evaluate = fast.evaluate

    def recording(columns: Any, probabilities: bool) -> Any:
        threads.append(threading.get_ident())
        return evaluate(columns, probabilities)

    fast.evaluate = recording  # type: ignore[method-assign]
    b.fast = fast
    per_request = 128
    assert INLINE_MAX_ROWS % per_request == 0

    async def round_of(n_requests: int) -> tuple[list[Prediction], int]:
        requests = [parse(b.schema, rows(per_request, seed=i)) for i in range(n_requests)]
        answers = await asyncio.gather(*(b.predict(r, False) for r in requests))
        return list(answers), threading.get_ident()

    for n_requests, on_loop in (
        (INLINE_MAX_ROWS // per_request, True),
        (INLINE_MAX_ROWS // per_request + 1, False),
    ):
        threads.clear()
        answers, loop_thread = asyncio.run(round_of(n_requests))
        assert len(threads) == 1, "one batch"
        assert (threads[0] == loop_thread) is on_loop
        for i, answer in enumerate(answers):
            frame = b.schema.to_model_input(parse(b.schema, rows(per_request, seed=i)))
            assert answer.labels == champion.model.predict(frame).tolist()
