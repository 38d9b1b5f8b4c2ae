"""The only module that imports mlflow's client: resolve a model URI in the registry, download, load."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from model_api.errors import InvalidModelURI, ModelLoadError, describe_error
from model_api.model_uri import MOVABLE, ModelRef, RefKind, parse_model_uri

logger = logging.getLogger(__name__)

# MLflow error codes that retrying cannot fix.
PERMANENT_CODES = frozenset(
    {
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
        "NOT_FOUND",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "BAD_REQUEST",
        "INVALID_STATE",
        "FEATURE_DISABLED",
    }
)


@dataclass
class LoadedModel:
    """A model in memory with what the registry says about it."""

    ref: ModelRef
    model: Any
    """The raw model: the estimator or booster of a flavor MLflow can unwrap, else the pyfunc model."""
    flavor: str
    signature: Any
    input_example: pd.DataFrame | None
    """The input example when it is a table (the contract's example rows)."""
    name: str
    version: str | None
    run_id: str | None
    source: str
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_seconds: float = 0.0
    pyfunc: Any = None
    """MLflow's pyfunc model (mlflow.pyfunc.PyFuncModel): the reference every answer follows."""
    example: Any = None
    """The input example as MLflow saved it (DataFrame, ndarray, dict, list), for the warm-up."""
    metadata: Any = None
    """The MLmodel (mlflow.models.Model)."""
    predict_fn: str = "predict"
    """The pyfunc flavor's predict function (`pyfunc_predict_fn` when the model was logged)."""

    @property
    def estimator_class(self) -> str:
        """The class of the model, with the final step of a pipeline in brackets."""
        cls = type(self.model)
        text = f"{cls.__module__}.{cls.__qualname__}"
        steps = getattr(self.model, "steps", None)
        if steps:
            last = type(steps[-1][1])
            text += f"({last.__module__}.{last.__qualname__})"
        return text


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version in the registry."""

    version: str
    run_id: str


@dataclass(frozen=True)
class _Resolved:
    name: str
    version: str | None
    run_id: str | None
    source: str


def _client(tracking_uri: str, registry_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def _find_version(client: Any, ref: ModelRef) -> Any:
    """The registry's model version a registry reference names now: one registry call."""
    assert ref.name is not None
    if ref.kind is RefKind.ALIAS:
        return client.get_model_version_by_alias(ref.name, ref.alias)
    if ref.kind is RefKind.VERSION:
        return client.get_model_version(ref.name, ref.version)
    if ref.kind is RefKind.LATEST:
        versions = client.search_model_versions(f"name = '{ref.name}'")
        if not versions:
            raise ModelLoadError(f"{ref.uri!r}: model {ref.name!r} has no versions in the registry")
        return max(versions, key=lambda v: int(v.version))
    logger.warning("model stages are deprecated in MLflow; prefer an alias (models:/%s@ALIAS)", ref.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        versions = client.get_latest_versions(ref.name, stages=[ref.stage])
    if not versions:
        raise ModelLoadError(f"{ref.uri!r}: no version of {ref.name!r} is in stage {ref.stage}")
    return versions[0]


def _resolve(
    ref: ModelRef, tracking_uri: str, registry_uri: str | None, pinned: RegisteredVersion | None = None
) -> _Resolved:
    """Where the model is: two registry calls (the version, its download URI), one when the
    version was decided already (`pinned`)."""
    if ref.kind is RefKind.PATH:
        assert ref.path is not None
        path = Path(ref.path)
        if not (path / "MLmodel").is_file():
            raise ModelLoadError(f"{ref.uri!r}: no MLmodel file in that folder; check the path")
        return _Resolved(path.resolve().name, None, None, str(path.resolve()))
    if ref.kind is RefKind.RUN:
        return _Resolved(ref.path or "model", None, ref.run_id, ref.uri)
    client = _client(tracking_uri, registry_uri)
    assert ref.name is not None
    if pinned is not None:
        version, run_id = pinned.version, pinned.run_id
    else:
        mv = _find_version(client, ref)
        version, run_id = str(mv.version), mv.run_id or ""
    source = client.get_model_version_download_uri(ref.name, version)
    return _Resolved(ref.name, version, run_id or None, source)


def _download(ref: ModelRef, resolved: _Resolved, tracking_uri: str) -> tuple[Path, Path | None]:
    """Bring the model folder to local disk; returns it and the temporary folder that holds it."""
    import mlflow.artifacts

    if ref.kind is RefKind.PATH:
        return Path(resolved.source), None
    target = tempfile.mkdtemp(prefix="model-api-")
    uri = ref.uri if ref.kind is RefKind.RUN else resolved.source
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=target, tracking_uri=tracking_uri
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return Path(local), Path(target)


FLAVORS = ("sklearn", "xgboost", "lightgbm")
"""Flavors whose raw model the service can use itself (probabilities; the contract path)."""


@dataclass(frozen=True)
class _Folder:
    pyfunc: Any
    raw: Any
    flavor: str
    meta: Any
    example: Any


def _load_folder(folder: Path) -> _Folder:
    """Load the model as MLflow's pyfunc model, and unwrap its raw model where the flavor allows.

    Raises ModelLoadError naming a missing package in one line."""
    import mlflow.pyfunc
    from mlflow.models import Model

    meta = Model.load(str(folder))
    if "python_function" not in meta.flavors:
        raise ModelLoadError(f"{folder}: the model has no python_function flavor, so MLflow cannot serve it")
    example: Any = None
    try:
        example = meta.load_input_example(str(folder))
    except Exception:  # an unreadable example only costs the warm-up and the docs example
        logger.warning("the model's input example could not be read; using a synthetic one")
    try:
        pyfunc = mlflow.pyfunc.load_model(str(folder))
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"the model needs the Python package {exc.name!r}, which is not installed here; install it "
            "(the flavor's package, as listed in the model's requirements.txt)",
            final=True,
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"MLflow could not load the model: {describe_error(exc)}", final=True) from exc
    flavor = next((f for f in FLAVORS if f in meta.flavors), None)
    raw: Any = pyfunc
    if flavor is not None:
        try:
            raw = pyfunc.get_raw_model()
        except Exception:
            flavor = None
    if flavor is None:
        flavor = f"pyfunc:{meta.flavors['python_function'].get('loader_module', 'python_function')}"
    return _Folder(pyfunc, raw, flavor, meta, example)


def _is_transient(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, ModelLoadError):
        return exc.transient
    if isinstance(exc, MlflowException):
        return exc.error_code not in PERMANENT_CODES
    return isinstance(exc, (ConnectionError, TimeoutError, OSError)) and not isinstance(
        exc, FileNotFoundError
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if "NewConnectionError" in text or "Connection refused" in text:
        return "the registry refused the connection"
    if "Read timed out" in text or "ConnectTimeout" in text:
        return "the registry did not answer in time"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def load_model(
    uri: str,
    tracking_uri: str,
    registry_uri: str | None = None,
    *,
    retry_budget_s: float = 30.0,
    pinned: RegisteredVersion | None = None,
) -> LoadedModel:
    """Resolve and load `uri`, retrying transient registry errors with backoff within the budget.

    `pinned` is the registered version to load (a reload loads the version it decided on, even if
    the alias moves again meanwhile, without asking the registry again which one it is).
    Raises ModelLoadError with one line that names the URI, what failed and what to check.
    """
    ref = parse_model_uri(uri)
    # Our own loop retries within the budget; MLflow's default HTTP retries would outlast it.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    started = time.monotonic()
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            resolved = _resolve(ref, tracking_uri, registry_uri, pinned)
            with mlflow_uris(tracking_uri, registry_uri):
                folder, scratch = _download(ref, resolved, tracking_uri)
            flavor = ""
            try:
                found = _load_folder(folder)
                flavor = found.flavor
            finally:
                # A sklearn model is read whole into memory; a pyfunc model may still need its files.
                if scratch is not None and flavor in ("", "sklearn"):
                    shutil.rmtree(scratch, ignore_errors=True)
            break
        except InvalidModelURI:
            raise
        except Exception as exc:
            if isinstance(exc, ModelLoadError) and exc.final:
                raise ModelLoadError(f"cannot load model {uri!r}: {exc}", final=True) from exc.__cause__
            elapsed = time.monotonic() - started
            if not _is_transient(exc) or elapsed + delay > retry_budget_s:
                hint = (
                    f"check that the registry at {tracking_uri} is reachable"
                    if _is_transient(exc)
                    else "check the model name, version or alias and the registry URI"
                )
                raise ModelLoadError(
                    f"cannot load model {uri!r} from {tracking_uri} after {attempt} attempt(s): "
                    f"{_describe(exc)}; {hint}"
                ) from exc
            logger.warning(
                "loading %s failed (attempt %d: %s); retrying in %.1fs", uri, attempt, _describe(exc), delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    return LoadedModel(
        ref=ref,
        model=found.raw,
        flavor=found.flavor,
        signature=found.meta.signature,
        input_example=found.example if isinstance(found.example, pd.DataFrame) else None,
        pyfunc=found.pyfunc,
        example=found.example,
        metadata=found.meta,
        predict_fn=found.meta.flavors["python_function"].get("predict_fn", "predict"),
        name=resolved.name,
        version=resolved.version,
        run_id=resolved.run_id,
        source=resolved.source,
        load_seconds=time.monotonic() - started,
    )


@contextmanager
def mlflow_uris(tracking_uri: str, registry_uri: str | None = None) -> Iterator[None]:
    """Point MLflow's process-wide URIs at this registry for a block, then put them back.

    Some MLflow paths (runs:/ URIs of MLflow 3 logged models, the fluent logging API) read the
    global URIs whatever the client was given.
    """
    import mlflow

    # set_*_uri also writes MLFLOW_*_URI into os.environ: restore those exactly as they were.
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def current_version(
    ref: ModelRef, tracking_uri: str, registry_uri: str | None = None
) -> RegisteredVersion | None:
    """The version a movable reference (alias, latest, stage) names right now, in one registry
    call; None for fixed ones.

    Raises ModelLoadError (transient when the registry could not be reached).
    """
    if ref.kind not in MOVABLE:
        return None
    try:
        mv = _find_version(_client(tracking_uri, registry_uri), ref)
        return RegisteredVersion(str(mv.version), mv.run_id or "")
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"cannot resolve {ref.uri!r} in {tracking_uri}: {_describe(exc)}", transient=_is_transient(exc)
        ) from exc
