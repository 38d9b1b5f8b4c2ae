"""Zero-downtime rollouts: follow the registry alias, load and warm off the request path, swap.

When the served URI is movable (models:/NAME@ALIAS, /latest, /STAGE), a background task asks the
registry every `reload_interval_s` which version it names. A new version is loaded and warmed in a
worker thread, its input contract checked against the one clients use, and then swapped in with
one assignment. Requests take the predictor synchronously right before they queue on it, so each
finishes on the model it started with, and a batch never mixes two models. The old predictor is
drained and closed in the background. Whatever fails, the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import anyio.to_thread

from model_api.batching import MicroBatcher
from model_api.errors import ModelLoadError
from model_api.fastserve import attach_fast_path
from model_api.metrics import Metrics
from model_api.model_uri import MOVABLE, RefKind, parse_model_uri
from model_api.predictor import Predictor
from model_api.registry import LoadedModel, RegisteredVersion, current_version, load_model
from model_api.settings import Settings
from model_api.signature import model_spec

logger = logging.getLogger(__name__)

Loader = Callable[[Settings, RegisteredVersion | None], LoadedModel]
"""Resolve, download and deserialize the served model (`version` pins the one decided on)."""


def load_from_registry(settings: Settings, pinned: RegisteredVersion | None = None) -> LoadedModel:
    """Resolve `settings.model_uri` in the MLflow registry and load it (`pinned` skips resolving)."""
    return load_model(
        settings.model_uri,
        settings.tracking_uri,
        settings.registry_uri,
        retry_budget_s=settings.startup_retry_s if pinned is None else 0.0,
        pinned=pinned,
    )


def load_predictor(
    load: Loader,
    settings: Settings,
    metrics: Metrics,
    pinned: RegisteredVersion | None = None,
    *,
    must_warm: bool = False,
) -> Predictor:
    """The one load, for the first one and every reload: resolve, download, deserialize, derive
    what requests are parsed against, wrap the model in a (batching) predictor, compile and check
    its fast path (`fastserve.py`) and warm it.
    Blocking: run it in one worker thread.

    A model that cannot be warmed starts unwarmed with a warning (MLflow would serve it), except
    where `must_warm` (a reload: the version served keeps serving instead). Raises ModelLoadError."""
    loaded = load(settings, pinned)
    spec = model_spec(loaded)
    predictor: Predictor
    if settings.batching:
        predictor = MicroBatcher(
            loaded,
            spec,
            threads=settings.model_threads,
            metrics=metrics,
            max_rows=settings.batch_max_rows,
            max_wait_s=settings.batch_max_wait_ms / 1000,
        )
    else:
        predictor = Predictor(loaded, spec, threads=settings.model_threads, metrics=metrics)
    try:
        attach_fast_path(predictor, settings, metrics)
        unwarmed = predictor.warm()
    except BaseException:
        predictor.close()
        raise
    if unwarmed is not None:
        if must_warm:
            predictor.close()
            raise ModelLoadError(f"version {loaded.version} of {loaded.name} could not be warmed: {unwarmed}")
        logger.warning("serving %s version %s unwarmed: %s", loaded.name, loaded.version, unwarmed)
    return predictor


class Target(Protocol):
    """What a rollout swaps versions into: the data plane, or the shadow challenger."""

    predictor: Predictor | None
    metrics: Metrics

    def serve(self, predictor: Predictor) -> None: ...


@dataclass
class RolloutStatus:
    """What /model/info says about following the registry."""

    follows: str | None
    """The movable reference followed (alias, latest or stage), or None for a fixed one."""
    interval_s: float
    accept_schema_change: bool
    last_check_at: datetime | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    failed_version: str | None = None
    """A version that failed to load, warm or pass the contract check; not retried until the
    reference moves again or a reload is asked for."""
    schema_changes: list[str] = field(default_factory=list)
    """How the served model's input contract differs from the one before it, when a change was
    accepted."""


def contract_changes(new: Predictor, old: Predictor) -> list[str]:
    """What a request valid for `old` could fail on under `new`: our contract's check where both
    have one, else whether MLflow's input signature changed at all."""
    if new.schema is not None and old.schema is not None:
        return new.schema.breaks_clients_of(old.schema)
    before, after = old.spec.input_schema, new.spec.input_schema
    if (None if before is None else before.to_dict()) != (None if after is None else after.to_dict()):
        return ["the input signature changed"]
    return []


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did."""

    action: str
    """reloaded, unchanged, failed or refused."""
    from_version: str | None
    to_version: str | None
    message: str


class Rollout:
    """Follows the served reference in the registry and swaps new versions in without downtime."""

    def __init__(
        self,
        plane: Target,
        settings: Settings,
        *,
        on_swap: Callable[[], None],
        load: Loader = load_from_registry,
    ) -> None:
        ref = parse_model_uri(settings.model_uri)
        self._plane = plane
        self._settings = settings
        self._ref = ref
        self._load = load
        self._on_swap = on_swap
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        follows = ref.alias or ref.stage or ("latest" if ref.kind is RefKind.LATEST else None)
        self.status = RolloutStatus(
            follows=follows if ref.kind in MOVABLE else None,
            interval_s=settings.reload_interval_s,
            accept_schema_change=settings.reload_accept_schema_change,
        )

    def start(self) -> None:
        """Poll the registry in the background, when there is a movable reference to follow."""
        if self.status.follows is not None and self._settings.reload_interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="model-rollout")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reload_interval_s)
            try:
                await self.reload()
            except Exception:  # the poller must outlive any surprise; the old model keeps serving
                logger.exception("model reload check failed")

    async def reload(self, *, force: bool = False, retry_failed: bool = False) -> ReloadResult:
        """Load the version the reference names now and swap it in if it is new.

        `retry_failed` tries again a version that failed before; `force` reloads even the version
        already served.
        """
        async with self._lock:
            if retry_failed or force:
                self.status.failed_version = None
            result = await self._reload(force)
        self.status.last_check_at = datetime.now(UTC)
        self.status.last_outcome = result.action
        if result.action in ("failed", "refused"):
            self.status.last_error = result.message
        elif result.action == "reloaded":
            self.status.last_error = None
        self._plane.metrics.reloads.labels(result.action).inc()
        return result

    async def _reload(self, force: bool) -> ReloadResult:
        current = self._plane.predictor
        assert current is not None, "the rollout starts after the first load"
        settings = self._settings
        try:
            target = await anyio.to_thread.run_sync(
                current_version, self._ref, settings.tracking_uri, settings.registry_uri
            )
        except ModelLoadError as exc:
            if self.status.last_error != str(exc):  # once per outage, not once per poll
                logger.warning(
                    "cannot check %s in the registry: %s; still serving version %s",
                    settings.model_uri,
                    exc,
                    current.version,
                )
            return ReloadResult("failed", current.version, None, str(exc))
        version = target.version if target is not None else None
        if not force and (version == current.version or target is None):
            return ReloadResult("unchanged", current.version, current.version, "already serving it")
        if not force and version == self.status.failed_version:
            return ReloadResult(
                "unchanged",
                current.version,
                version,
                f"version {version} failed before; move the alias or reload to retry",
            )
        try:
            new = await anyio.to_thread.run_sync(
                functools.partial(load_predictor, must_warm=True),
                self._load,
                settings,
                self._plane.metrics,
                target,
            )
        except Exception as exc:
            self.status.failed_version = version
            logger.error(
                "version %s of %s failed to load or warm; still serving version %s: %s",
                version,
                settings.model_uri,
                current.version,
                exc,
            )
            return ReloadResult("failed", current.version, version, f"version {version} failed: {exc}")
        problems = contract_changes(new, current)
        if problems and not settings.reload_accept_schema_change:
            self._retire(new)
            self.status.failed_version = version
            message = (
                f"version {version} changes the input contract ({'; '.join(problems)}); "
                "set MODEL_API_RELOAD_ACCEPT_SCHEMA_CHANGE=true to serve it anyway"
            )
            logger.error("%s; still serving version %s", message, current.version)
            return ReloadResult("refused", current.version, version, message)
        self._plane.serve(new)  # the swap
        self.status.failed_version = None
        self.status.schema_changes = problems
        self._on_swap()
        self._retire(current)
        logger.info("now serving %s version %s (was %s)", new.name, new.version, current.version)
        return ReloadResult("reloaded", current.version, new.version, f"now serving version {new.version}")

    def _retire(self, old: Predictor) -> None:
        async def retire() -> None:
            await old.drain()
            await anyio.to_thread.run_sync(old.close)

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Stop polling and let retired predictors finish."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            if self._retiring:
                await asyncio.gather(*self._retiring, return_exceptions=True)
