"""The app factory and its lifespan: load and warm the model off the event loop, then serve it."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from model_api import __version__
from model_api.access import AccessMiddleware
from model_api.api import admin, kserve_v1, predict, service, v2
from model_api.api.docs import install_docs
from model_api.auth import document_auth
from model_api.drain import install_sigterm_drain
from model_api.errors import ModelLoadError, install_error_handlers
from model_api.logs import skip_unused_record_fields
from model_api.metrics import Metrics
from model_api.middleware import RequestIdMiddleware
from model_api.responses import JSONResponse
from model_api.rollout import Loader, Rollout, build_predictor, load_from_registry
from model_api.security import install_guards
from model_api.settings import Settings
from model_api.state import ServiceState

logger = logging.getLogger(__name__)

DESCRIPTION = """Serves a model from the MLflow registry: `/predict` validates rows against the
model's signature; `/health` and `/ready` are the probes; `/model/info` says what is served."""


def create_app(settings: Settings | None = None, *, loader: Loader | None = None) -> FastAPI:
    """Build the service. Nothing is loaded until the lifespan starts.

    `loader` replaces the registry for the first load (tests pass real models built in process).
    """
    settings = settings or Settings()
    load = loader or load_from_registry
    state = ServiceState(settings=settings, metrics=Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        skip_unused_record_fields()
        try:
            loaded = await anyio.to_thread.run_sync(load, settings)
            predictor = await anyio.to_thread.run_sync(build_predictor, loaded, settings, state.metrics)
        except ModelLoadError as exc:
            logger.error("startup failed: %s", exc)
            raise
        logger.info(
            "serving %s version %s (%s) loaded in %.2fs",
            loaded.name,
            loaded.version,
            loaded.ref.uri,
            loaded.load_seconds,
        )
        state.serve(predictor)
        app.openapi_schema = None
        # Everything loaded so far (MLflow, pandas, the model) lives as long as the process: keep
        # it out of the garbage collector's full passes, which otherwise stall requests for tens
        # of milliseconds under load.
        gc.collect()
        gc.freeze()
        rollout = Rollout(state, settings, on_swap=lambda: setattr(app, "openapi_schema", None))
        app.state.rollout = rollout
        rollout.start()
        restore_sigterm = install_sigterm_drain(state, settings.drain_grace_s)
        try:
            yield
        finally:
            restore_sigterm()
            state.draining = True
            state.metrics.set_ready(False)
            await rollout.close()
            served = state.require_predictor()
            await served.drain()
            await anyio.to_thread.run_sync(served.close)
            state.metrics.close()

    app = FastAPI(
        title="Model API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONResponse,
    )
    app.state.service = state
    install_error_handlers(app)
    state.metrics.instrument(app)
    secured = install_guards(app, settings)
    app.add_middleware(AccessMiddleware, metrics=state.metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: the id is set before anything logs
    app.include_router(service.router)
    app.include_router(predict.router)
    app.include_router(admin.router)
    app.include_router(kserve_v1.router)
    app.include_router(v2.router)
    install_docs(app)
    _install_openapi(app, state)
    if secured:
        document_auth(app)
    return app


def _install_openapi(app: FastAPI, state: ServiceState) -> None:
    """Document /predict with the served model's own schema and input example."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        predictor = state.predictor
        if predictor is None:  # before the model is loaded: a placeholder, not cached
            schemas["PredictRequest"] = {"type": "object", "title": "PredictRequest"}
            return doc
        schemas.update(predictor.schema.json_schemas(state.settings.max_rows))
        body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        body["examples"] = predictor.schema.examples()
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
