"""The app factory: the middleware stack, the routers, and the lifespan that loads the model."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from model_api import __version__
from model_api.api import admin, invocations, kserve_v1, predict, service, v2
from model_api.api.docs import install_docs
from model_api.api.errors import install_error_handlers
from model_api.api.openapi import install_openapi
from model_api.dataplane import DataPlane
from model_api.drain import install_sigterm_drain
from model_api.errors import ModelLoadError
from model_api.logs import skip_unused_record_fields
from model_api.metrics import Metrics
from model_api.middleware.api_keys import ApiKeyMiddleware, load_api_keys
from model_api.middleware.body_limit import BodyLimitMiddleware
from model_api.middleware.edge import EdgeMiddleware
from model_api.middleware.errors import UnexpectedErrorMiddleware
from model_api.registry import LoadedModel, RegisteredVersion
from model_api.responses import JSONResponse
from model_api.rollout import Rollout, load_from_registry, load_predictor
from model_api.settings import Settings
from model_api.shadow import follow
from model_api.watch import build_watch

logger = logging.getLogger(__name__)

DESCRIPTION = """Serves a model from the MLflow registry: `/predict` validates rows against the
model's signature; `/health` and `/ready` are the probes; `/model/info` says what is served."""


def middleware_stack(settings: Settings, keys: list[str], plane: DataPlane) -> list[Middleware]:
    """Every layer a request passes before its route, outermost first.

    First the edge (middleware/edge.py): the request id, the refusal of a prediction request past
    the worker's bound (before any other work; with CORS on, the route's admit refuses, inside CORS,
    so a browser can read the 503), the metrics and access line, the security headers
    and the 500 for an unexpected exception, for every answer including the guards' refusals
    below it. CORS answers a browser's preflight before keys are asked for (a preflight never
    carries them); keys are checked before a body is read; the body limit bounds every body as it
    is read; with CORS on, an unexpected exception's 500 is rendered innermost, inside CORS.
    """
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    # With CORS on, refusals are answered inside it (by admit), so a browser can read them.
    stack = [Middleware(EdgeMiddleware, plane=plane, refuse_early=not origins)]
    if origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "X-API-Key",
                    "X-Request-ID",
                    "X-Request-Timeout",
                ],
                expose_headers=["X-Request-ID", "Retry-After"],
                max_age=600,
            )
        )
    if keys:
        stack.append(Middleware(ApiKeyMiddleware, keys=keys))
    stack.append(Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes))
    if origins:  # a 500 rendered inside CORS, so a browser can read it (middleware/errors.py)
        stack.append(Middleware(UnexpectedErrorMiddleware))
    return stack


def create_app(
    settings: Settings | None = None, *, loader: Callable[[Settings], LoadedModel] | None = None
) -> FastAPI:
    """Build the service. Nothing is loaded until the lifespan starts.

    `loader` replaces the registry for the first load (tests pass real models built in process);
    reloads always ask the registry.
    """
    settings = settings or Settings()
    metrics = Metrics()
    plane = DataPlane(settings, metrics)
    keys = load_api_keys(settings)

    def first_load(s: Settings, pinned: RegisteredVersion | None) -> LoadedModel:
        return loader(s) if loader is not None else load_from_registry(s, pinned)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        skip_unused_record_fields()
        # Before the first load, so the served model's reference profile is built when it is served.
        watch = plane.watch = await anyio.to_thread.run_sync(build_watch, settings, metrics)
        try:
            predictor = await anyio.to_thread.run_sync(load_predictor, first_load, settings, metrics)
        except ModelLoadError as exc:
            logger.error("startup failed: %s", exc)
            await anyio.to_thread.run_sync(watch.close)
            raise
        loaded = predictor.loaded
        logger.info(
            "serving %s version %s (%s) loaded in %.2fs",
            loaded.name,
            loaded.version,
            loaded.ref.uri,
            loaded.load_seconds,
        )
        plane.serve(predictor)
        # The plane holds the served version from now on. This frame lives as long as the app: kept
        # here, the first version would outlive its retirement after a reload, model and all.
        del predictor, loaded
        forget_openapi()
        # Everything loaded so far (MLflow, pandas, the model) lives as long as the process: keep
        # it out of the garbage collector's full passes, which otherwise stall requests for tens
        # of milliseconds under load; and collect the young generation only once many objects
        # are new, not every 700 (settings.gc_threshold).
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, *thresholds[1:])
        rollout = app.state.rollout = Rollout(plane, settings, on_swap=forget_openapi)
        rollout.start()
        lag_watch = asyncio.get_running_loop().create_task(plane.loop_lag.run())
        shadow_rollout = app.state.shadow_rollout = (
            await follow(watch.shadow) if watch.shadow is not None else None
        )
        restore_sigterm = install_sigterm_drain(plane, settings.drain_grace_s)
        try:
            yield
        finally:
            restore_sigterm()
            lag_watch.cancel()
            plane.start_draining()
            await rollout.close()
            if shadow_rollout is not None:
                await shadow_rollout.close()
            served = plane.served()
            await served.drain()
            await anyio.to_thread.run_sync(served.close)
            await anyio.to_thread.run_sync(watch.close)  # after the last answer: its record is kept
            metrics.close()
            gc.set_threshold(*thresholds)  # process-wide: as it was for whatever runs next

    app = FastAPI(
        # FastAPI's own OpenTelemetry instrumentation asks the global providers on every request
        # whether it is on (a few us); the service's telemetry is its Prometheus metrics and logs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Model API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONResponse,
        middleware=middleware_stack(settings, keys, plane),
    )
    app.state.dataplane = plane
    install_error_handlers(app)
    # Each route straight into the app's router: FastAPI 0.165's include_router keeps the router
    # whole and matches every request through it, about 20 us a request (measured). The
    # prediction routes first, ahead of FastAPI's own /openapi.json: the router tries the routes
    # in order, and no two of these match the same path.
    routes = app.router.routes
    served = [
        r
        for router in (predict.router, invocations.router, kserve_v1.router, v2.router)
        for r in router.routes
    ]
    app.router.routes = [*served, *routes, *service.router.routes, *admin.router.routes]
    install_docs(app)
    forget_openapi = install_openapi(app, plane, secured=bool(keys))
    return app
