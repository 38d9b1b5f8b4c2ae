"""The data plane: the one object between every protocol and the model (as in MLServer and KServe).

Every prediction route runs the same straight line: admit (the model named is served and ready,
and the worker holds fewer than `max_in_flight` prediction requests), read and parse its
protocol's envelope, then `infer` here (validate the rows against the served
model's contract, queue them on the predictor within the request timeout, count the outcome),
then render. The data plane holds the served predictor and the service's readiness and draining
state; a rollout swaps the predictor with `serve`.

A request takes the served predictor synchronously when it queues: a rollout may swap the
predictor at any `await`, and the old one is drained only of the work already queued on it, so
each request finishes on the model it was queued on and a batch never mixes two models.

Admission control: past `max_in_flight` a request is refused (Overloaded, 503 with Retry-After)
before its body is read. An admitted request has a budget (`request_timeout_s`, or less with the
X-Request-Timeout header) from admission to answer; one still queued when it runs out is answered
Expired (504) and never reaches the model, and one whose client disconnects while it waits is
dropped from the queue. Both are counted in `requests_shed_total`, not in `predictions_total`.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from model_api.admission import TIMEOUT_HEADER, Client, DisconnectWatch, LoopLag, Receive, Ticket, budget_s
from model_api.errors import (
    ClientDisconnected,
    ErrorDetail,
    Expired,
    InvalidInput,
    ModelNotReady,
    NotFound,
    Overloaded,
    RequestTimeout,
    ServingError,
)
from model_api.inputs import ModelInput, ModelInputs, check_params
from model_api.metrics import Metrics
from model_api.predictor import Prediction, Predictor
from model_api.settings import Settings

LAG_INTERVAL_S = 0.01
"""How often the event loop's lag is measured while admission uses it (`max_loop_lag_ms` set)."""
LAG_SAMPLE_S = 0.1
"""How often it is measured for the `event_loop_lag_seconds` histogram alone. Waking an idle
worker is dear on this project's machines (~120 us of CPU a wake-up): over 60 s idle, a worker
ticking every 10 ms used 1.38% of a core, every 100 ms 0.26%, with no timer 0.16%."""

if TYPE_CHECKING:
    from model_api.watch import Watch

NAME_SHOWN = 64
"""How much of a client-chosen model name or version an error message repeats."""
SHEDDING_S = 0.05
"""After a refusal, the worker counts as shedding this long (`DataPlane.shedding`): the HTTP
protocol paces the starts of admitted requests meanwhile (`http_protocol.TurnPacer`)."""
OVERLOADED = "this worker is at capacity; retry shortly"
"""What a refusal at admission says (the same every time: the HTTP protocol renders it once)."""


@dataclass(frozen=True)
class InferenceRequest:
    """A protocol's request, its envelope parsed: the rows, and what is asked of the model."""

    inputs: ModelInputs
    params: Any = None
    """The request's params (MLflow's `params`; `parameters` on V1 and V2), checked against the
    model's ParamSchema and passed on unchanged."""
    return_probabilities: bool = False
    probabilities_field: str = "return_probabilities"
    """Where the request asked for probabilities, named in the 422 of a model without them."""


@dataclass(frozen=True)
class InferenceResult:
    """The model's answer for one request, with the predictor that gave it (name, version, classes)."""

    predictor: Predictor
    prediction: Prediction
    n_rows: int


class Admission:
    """A prediction request inside the data plane, from before its body is read until it is
    answered; used as a context manager, it counts the request's outcome when it leaves:
    ok, invalid (any 4xx: the body, its envelope or its rows) or error (5xx); or, if it never
    reached the model, shed as expired or disconnected. It holds one of the worker's
    `max_in_flight` places until then. When it leaves answered, it hands the request to the
    plane's watch (metrics, inference log, shadow; `watch.py`): the route sets `payload` (the body
    as parsed, or its bytes) and `answer` (what it renders), the data plane `request`, `batch`
    and `prediction`."""

    __slots__ = (
        "answer",
        "batch",
        "budget_s",
        "deadline",
        "gone",
        "model_version",
        "n_rows",
        "payload",
        "plane",
        "prediction",
        "predictor",
        "receive",
        "request",
        "request_id",
        "route",
        "started",
        "ticket",
    )

    def __init__(
        self,
        plane: DataPlane,
        predictor: Predictor,
        model_version: str | None,
        budget_s: float,
        receive: Receive | None = None,
        *,
        route: str = "",
        request_id: str | None = None,
    ) -> None:
        self.plane = plane
        self.predictor = predictor
        self.model_version = model_version
        self.n_rows = 0
        """Rows that reached the model (0 until the request's rows passed the contract)."""
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        """When the request's budget runs out, in `time.monotonic()` seconds."""
        self.receive = receive
        self.ticket: Ticket | None = None
        self.gone = False
        """Set when the client disconnected while the request waited for the model."""
        plane.in_flight += 1
        plane.metrics.in_flight.inc()
        self.route = route
        self.request_id = request_id
        self.started = time.perf_counter()
        self.payload: Any = None
        self.answer: Any = None
        self.request: InferenceRequest | None = None
        self.batch: ModelInput | None = None
        self.prediction: Prediction | None = None

    def __enter__(self) -> Admission:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        metrics = self.plane.metrics
        self.plane.in_flight -= 1
        metrics.in_flight.dec()
        if isinstance(exc, (Expired, ClientDisconnected)):
            if self.ticket is None or not self.ticket.started:
                metrics.shed_by_reason["expired" if isinstance(exc, Expired) else "disconnected"].inc()
            return
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, ServingError) and exc.status_code < 500:
            outcome = "invalid"
        elif isinstance(exc, Exception):
            outcome = "error"
        else:  # cancelled: the client is gone, nothing was answered
            return
        metrics.count_prediction(self.predictor.name, self.predictor.version or "", outcome, self.n_rows)
        if self.plane.watch is not None:
            self.plane.watch.answered(self, exc)


class DataPlane:
    """Holds the served predictor, readiness and draining; admits, validates, predicts and counts."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.predictor: Predictor | None = None
        self.draining = False
        """Set on SIGTERM or shutdown: /ready answers 503 while requests in flight are served."""
        self.in_flight = 0
        """Prediction requests admitted and not yet answered (at most settings.max_in_flight)."""
        self.held = 0
        """Prediction requests the HTTP protocol admitted and paces (`http_protocol.TurnPacer`):
        they count toward the bound until their task hands them to the app's admission."""
        self.shed_at = -math.inf
        """When (`time.monotonic()`) a request was last refused as overloaded."""
        lag_every_s = LAG_INTERVAL_S if settings.max_loop_lag_ms > 0 else LAG_SAMPLE_S
        self.loop_lag = LoopLag(lag_every_s, settings.max_loop_lag_ms / 1000, metrics.loop_lag.observe)
        """Run by the app's lifespan; while the loop lags past `max_loop_lag_ms` (if set), the
        worker counts as full; every lag is observed in `event_loop_lag_seconds`."""
        self.watch: Watch | None = None
        """What observes answered requests (metrics, inference log, shadow); set by the app."""

    def serve(self, predictor: Predictor) -> None:
        """Make `predictor` the one requests use (one assignment: atomic on the event loop) and
        record in the metrics which model is served."""
        self.predictor = predictor
        if self.watch is not None:
            self.watch.served(predictor)
        loaded = predictor.loaded
        self.metrics.model_loaded(
            loaded.name,
            loaded.version,
            loaded.ref.alias,
            loaded.run_id,
            loaded.load_seconds,
            loaded.loaded_at,
        )

    def start_draining(self) -> None:
        """Fail readiness from now on; requests still arriving are served."""
        self.draining = True
        self.metrics.set_ready(False)

    def served(self) -> Predictor:
        """The serving predictor; ModelNotReady (503) while the model is loading."""
        if self.predictor is None:
            raise ModelNotReady("the model is still loading")
        return self.predictor

    def ready(self, name: str | None = None, version: str | None = None) -> Predictor:
        """The serving predictor, as `lookup`; ModelNotReady (503) while draining too (readiness)."""
        if self.draining:
            raise ModelNotReady("the service is shutting down")
        return self.lookup(name, version)

    def lookup(self, name: str | None = None, version: str | None = None) -> Predictor:
        """The serving predictor if it is the model (and version) named; 503 while loading, 404
        (NotFound) for a model or version not served here. No name means the served model."""
        predictor = self.served()
        if name is not None and name != predictor.name:
            raise NotFound(
                f"model '{name[:NAME_SHOWN]}' is not served here; this server serves '{predictor.name}'"
            )
        if version is not None and version != predictor.version:
            served = predictor.version if predictor.version is not None else "no registry version"
            raise NotFound(
                f"version '{version[:NAME_SHOWN]}' of '{predictor.name}' is not served here; "
                f"the served version is {served}"
            )
        return predictor

    def admit(
        self,
        name: str | None = None,
        version: str | None = None,
        client: Client | None = None,
        *,
        route: str = "",
        request_id: str | None = None,
    ) -> Admission:
        """Admit a prediction request before its body is read: 503 while loading, 404 for a model
        (or version) not served here, 400 for a malformed X-Request-Timeout, and Overloaded (503,
        Retry-After) when the worker already holds `max_in_flight` requests. With the `client`,
        its X-Request-Timeout shortens the budget and its disconnection drops it from the queue.
        `route` and `request_id` go to the inference log."""
        predictor = self.lookup(name, version)
        timeout_s = self.settings.request_timeout_s
        budget = timeout_s
        # `in` first: Starlette's Headers.get raises and catches a KeyError for an absent header
        if client is not None and TIMEOUT_HEADER in client.headers:
            budget = budget_s(client.headers[TIMEOUT_HEADER], timeout_s)
        if self.full():
            raise self.refuse()
        receive = client.receive if client is not None else None
        return Admission(self, predictor, version, budget, receive, route=route, request_id=request_id)

    def full(self) -> bool:
        """Whether the worker holds `max_in_flight` prediction requests, admitted or held by the
        HTTP protocol's pacer (0: no bound), or a quarter of them while its event loop lags past
        `max_loop_lag_ms` (its core is saturated; below a quarter, a lag is a pause, a garbage
        collection or a long model call, not overload)."""
        bound = self.settings.max_in_flight
        places = self.in_flight + self.held
        if bound and places >= bound:
            return True
        return self.loop_lag.lagging and places >= max(1, bound // 4)

    def refuse(self) -> Overloaded:
        """The refusal of a request past the bound, counted (`shed`)."""
        self.shed()
        return Overloaded(OVERLOADED)

    def shed(self) -> None:
        """Count one request refused past the bound (`requests_shed_total{reason="overloaded"}`);
        the worker sheds (`shedding`) from now."""
        self.shed_at = time.monotonic()
        self.metrics.shed_by_reason["overloaded"].inc()

    def shedding(self) -> bool:
        """Whether a request was refused as overloaded in the last `SHEDDING_S` seconds."""
        return time.monotonic() - self.shed_at < SHEDDING_S

    def hold(self) -> None:
        """Count a prediction request the HTTP protocol admitted and holds (`held`, and the
        `requests_in_flight` gauge) until `unhold`."""
        self.held += 1
        self.metrics.in_flight.inc()

    def unhold(self) -> None:
        """A held request reaches the app: its admission counts it from now."""
        self.held -= 1
        self.metrics.in_flight.dec()

    def drop_held(self) -> None:
        """A held request's client left before it started: counted as shed (`disconnected`)."""
        self.unhold()
        self.metrics.shed_by_reason["disconnected"].inc()

    async def infer(self, admission: Admission, request: InferenceRequest) -> InferenceResult:
        """Validate the request's rows against the served model's contract and predict them within
        the request timeout (the admission counts the outcome).

        Raises InvalidInput (422) or TooManyRows (413) for rows that break the contract,
        RequestTimeout (504), PredictionFailed (500), ModelNotReady (503) when shutting down, and
        NotFound (404) when the version the request named was swapped out while its body was read.
        """
        predictor = self.predictor
        if predictor is not admission.predictor:  # a rollout swapped models while the body was read
            predictor = admission.predictor = self.lookup(admission.predictor.name, admission.model_version)
        assert predictor is not None
        check_params(request.params, predictor.spec.params_schema)
        batch = request.inputs.to_model_input(predictor.spec, request.params, self.settings.max_rows)
        if request.return_probabilities and not predictor.has_probabilities:
            raise InvalidInput(
                "this model gives no class probabilities",
                [ErrorDetail("the model has no predict_proba", field=request.probabilities_field)],
            )
        admission.n_rows = batch.n_rows
        admission.request, admission.batch = request, batch
        prediction = admission.prediction = await self._predict_within(
            admission, predictor, batch, request.return_probabilities
        )
        return InferenceResult(predictor, prediction, batch.n_rows)

    async def _predict_within(
        self, admission: Admission, predictor: Predictor, batch: ModelInput, probabilities: bool
    ) -> Prediction:
        """`predictor.predict` within the request's budget: Expired (504) if the budget runs out
        before the request reaches the model, RequestTimeout (504) if while the model runs it,
        ClientDisconnected (499) if the client leaves while it waits.

        Cancelling the wait cancels the request's own future: the micro-batcher then skips it if
        its batch has not started, and a plain predictor's queued call is dropped before it
        reaches a model thread. A batch already running in a model thread runs to its end."""
        ticket = admission.ticket = Ticket(admission.deadline, admission.budget_s, self.metrics.queue_depth)
        remaining = ticket.remaining_s()
        if remaining <= 0:
            ticket.leave()
            raise ticket.expired_error()
        task = asyncio.current_task()
        assert task is not None

        def disconnected() -> None:
            admission.gone = True
            task.cancel()

        watcher = DisconnectWatch(admission.receive, disconnected) if admission.receive is not None else None
        deadline = asyncio.timeout(remaining)
        try:
            async with deadline:
                return await predictor.predict(batch, probabilities, ticket=ticket)
        except TimeoutError:
            if not deadline.expired():
                raise
            if not ticket.started:
                raise ticket.expired_error() from None
            raise RequestTimeout(
                f"the prediction took longer than its {admission.budget_s:g}s timeout; quote the request id"
            ) from None
        except asyncio.CancelledError:
            if not admission.gone:
                raise
            task.uncancel()
            raise ClientDisconnected("the client disconnected before its answer") from None
        finally:
            ticket.leave()
            if watcher is not None:
                watcher.cancel()
