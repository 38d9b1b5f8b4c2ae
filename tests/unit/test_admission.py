"""Admission's parts on the real demo model: budgets, and tickets that expire before the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from model_api.admission import DisconnectWatch, LoopLag, Ticket, budget_s
from model_api.dataplane import LAG_INTERVAL_S, LAG_SAMPLE_S, DataPlane
from model_api.errors import BadRequest, Expired, InvalidInput, Overloaded
from model_api.metrics import Metrics
from model_api.registry import LoadedModel
from model_api.settings import Settings
from tests.unit.test_batching import Recording, batcher, parse, rows
from tests.unit.test_dataplane import make_predictor


@pytest.fixture
def model(champion: LoadedModel) -> Recording:
    return Recording(champion.model)


def gauge(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def test_the_header_only_shortens_the_budget() -> None:
    assert budget_s(None, 30.0) == 30.0
    assert budget_s("0.25", 30.0) == 0.25
    assert budget_s("120", 30.0) == 30.0


@pytest.mark.parametrize("header", ["", "abc", "0", "-1", "nan", "inf", "1s"])
def test_a_malformed_header_is_a_bad_request(header: str) -> None:
    with pytest.raises(BadRequest, match="x-request-timeout"):
        budget_s(header, 30.0)


def test_a_ticket_keeps_the_queue_depth_and_leaves_once() -> None:
    metrics = Metrics()
    ticket = Ticket(time.monotonic() + 60, 60, metrics.queue_depth)
    assert gauge(metrics, "queue_depth") == 1
    assert ticket.start() and ticket.started
    ticket.leave()
    assert gauge(metrics, "queue_depth") == 0


def test_a_ticket_past_its_deadline_does_not_start() -> None:
    metrics = Metrics()
    ticket = Ticket(time.monotonic() - 1, 0.5, metrics.queue_depth)
    assert not ticket.start() and not ticket.started
    assert gauge(metrics, "queue_depth") == 0
    assert "0.5s timeout" in ticket.expired_error().message


def test_the_batcher_drops_an_expired_request_when_it_forms_a_batch(
    champion: LoadedModel, model: Recording
) -> None:
    """No timer involved: the deadline has passed when the batch forms (a loop lagging under load)."""
    b = batcher(champion, model)
    metrics = Metrics()

    async def main() -> list[object]:
        late = Ticket(time.monotonic() - 1, 1.0, metrics.queue_depth)
        live = Ticket(time.monotonic() + 60, 60.0, metrics.queue_depth)
        return await asyncio.gather(
            b.predict(parse(b.schema, rows(2, seed=1)), False, ticket=late),
            b.predict(parse(b.schema, rows(3, seed=2)), False, ticket=live),
            return_exceptions=True,
        )

    expired, answered = asyncio.run(main())
    b.close()
    assert isinstance(expired, Expired)
    assert model.calls == [3], "only the live request's rows reached the model"
    assert getattr(answered, "labels", None) is not None and len(answered.labels) == 3  # type: ignore[attr-defined]
    assert gauge(metrics, "queue_depth") == 0


def test_the_batcher_skips_a_batch_of_only_expired_requests(champion: LoadedModel, model: Recording) -> None:
    b = batcher(champion, model)
    metrics = Metrics()

    async def main() -> list[object]:
        tickets = [Ticket(time.monotonic() - 1, 1.0, metrics.queue_depth) for _ in range(3)]
        calls = [b.predict(parse(b.schema, rows(1, seed=i)), False, ticket=t) for i, t in enumerate(tickets)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        # The batcher is free again: a later request is answered.
        results.append(await b.predict(parse(b.schema, rows(1, seed=9)), False))
        return results

    results = asyncio.run(main())
    b.close()
    assert all(isinstance(r, Expired) for r in results[:3])
    assert model.calls == [1]


def test_a_plain_predictor_drops_an_expired_request_before_the_model(
    champion: LoadedModel, model: Recording
) -> None:
    loaded = LoadedModel(**{**champion.__dict__, "model": model})
    metrics = Metrics()
    predictor = make_predictor(loaded, metrics)
    schema = predictor.schema
    assert schema is not None
    late = Ticket(time.monotonic() - 1, 1.0, metrics.queue_depth)
    live = Ticket(time.monotonic() + 60, 60.0, metrics.queue_depth)
    try:
        with pytest.raises(Expired):
            asyncio.run(predictor.predict(parse(schema, rows(2, seed=1)), False, ticket=late))
        answer = asyncio.run(predictor.predict(parse(schema, rows(3, seed=2)), False, ticket=live))
    finally:
        predictor.close()
    assert model.calls == [3] and len(answer.labels) == 3
    assert live.started and not late.started


def test_the_data_plane_admits_up_to_its_bound(champion: LoadedModel) -> None:
    """admit() enforces the bound itself (the middleware only answers sooner), and frees a place
    whatever way a request leaves."""
    metrics = Metrics()
    plane = DataPlane(Settings(max_in_flight=2), metrics)
    plane.serve(make_predictor(champion, metrics))
    try:
        with plane.admit(), plane.admit():
            assert plane.full() and gauge(metrics, "requests_in_flight") == 2
            with pytest.raises(Overloaded) as refused:
                plane.admit()
        assert refused.value.retry_after_s == 1 and refused.value.status_code == 503
        with pytest.raises(InvalidInput), plane.admit():
            raise InvalidInput("a bad body")
        assert not plane.full() and plane.in_flight == 0
        assert gauge(metrics, "requests_in_flight") == 0
        assert metrics.registry.get_sample_value("requests_shed_total", {"reason": "overloaded"}) == 1
    finally:
        plane.served().close()


def block_the_loop_for_200_ms(lag: LoopLag, seen: Callable[[], bool]) -> None:
    """Run `lag` in a new event loop, hold the loop for 200 ms once the first tick is under way,
    then let it run until `seen()` (at most about a second)."""

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(lag.run())
        await asyncio.sleep(0.02)  # the first tick is under way
        time.sleep(0.2)  # noqa: ASYNC251 - the point: the loop runs nothing for 200 ms
        for _ in range(100):
            await asyncio.sleep(0.01)
            if seen():
                break
        task.cancel()

    asyncio.run(main())


def test_a_blocked_loop_is_measured_as_lagging() -> None:
    lag = LoopLag(interval_s=0.01, limit_s=0.05)
    block_the_loop_for_200_ms(lag, lambda: lag.lag_s > 0)
    assert lag.lag_s >= 0.15
    assert lag.lagging


def test_with_the_check_off_every_lag_is_still_observed() -> None:
    """The `event_loop_lag_seconds` histogram sees a blocked loop whether or not admission uses it."""
    metrics = Metrics()
    lag = LoopLag(interval_s=0.01, limit_s=0.0, observe=metrics.loop_lag.observe)

    def over_100_ms() -> float:
        get = metrics.registry.get_sample_value
        return (get("event_loop_lag_seconds_count") or 0) - (
            get("event_loop_lag_seconds_bucket", {"le": "0.1"}) or 0
        )

    block_the_loop_for_200_ms(lag, lambda: over_100_ms() > 0)
    assert over_100_ms() == 1, "the 200 ms block, once"
    assert (metrics.registry.get_sample_value("event_loop_lag_seconds_count") or 0) >= 2
    assert not lag.lagging, "no limit: admission never counts the loop as lagging"


def test_the_loop_ticks_every_10_ms_for_the_check_and_every_100_ms_for_the_histogram_alone() -> None:
    """Waking an idle worker costs CPU: the histogram alone samples ten times less often."""
    assert DataPlane(Settings(), Metrics()).loop_lag.interval_s == LAG_SAMPLE_S == 0.1
    assert DataPlane(Settings(max_loop_lag_ms=20), Metrics()).loop_lag.interval_s == LAG_INTERVAL_S == 0.01


def test_with_the_check_off_and_nothing_observing_no_timer_runs() -> None:
    lag = LoopLag(interval_s=0.01, limit_s=0.0)
    asyncio.run(asyncio.wait_for(lag.run(), timeout=5))  # returns at once: a timer would never end


def test_a_lagging_loop_fills_the_worker_from_a_quarter_of_its_bound(champion: LoadedModel) -> None:
    metrics = Metrics()
    plane = DataPlane(Settings(max_in_flight=8), metrics)
    plane.serve(make_predictor(champion, metrics))
    try:
        plane.loop_lag.lagging = True
        with plane.admit():
            assert not plane.full(), "one request in flight: a lag is not overload"
            with plane.admit():
                assert plane.full(), "a quarter of the bound in flight and the loop behind"
                plane.loop_lag.lagging = False
                assert not plane.full()
    finally:
        plane.served().close()


def test_a_disconnect_watch_starts_only_for_a_request_still_waiting() -> None:
    """Before `after_s` nothing reads the client's channel; after it, a disconnection is seen."""

    async def scenario() -> tuple[int, list[str]]:
        reads = 0
        gone = asyncio.Event()
        seen: list[str] = []

        async def receive() -> dict[str, str]:
            nonlocal reads
            reads += 1
            await gone.wait()
            return {"type": "http.disconnect"}

        answered = DisconnectWatch(receive, lambda: seen.append("answered"), after_s=0.01)
        answered.cancel()  # answered before the mark: the channel is never read
        waiting = DisconnectWatch(receive, lambda: seen.append("waiting"), after_s=0.01)
        for _ in range(200):  # bounded: the watch starts after 10 ms
            await asyncio.sleep(0.005)
            if reads:
                break
        gone.set()
        for _ in range(200):
            await asyncio.sleep(0.005)
            if seen:
                break
        waiting.cancel()
        return reads, seen

    reads, seen = asyncio.run(scenario())
    assert reads == 1 and seen == ["waiting"]
