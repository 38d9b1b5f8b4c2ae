"""Service settings, read from MODEL_API_* environment variables (and MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TRACKING_URI = "sqlite:///data/mlflow.db"


class Settings(BaseSettings):
    """Everything the service can be told; every field maps to MODEL_API_<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="MODEL_API_", frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    model_uri: str = "models:/ChurnPredictor@champion"
    """Served model: models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest, models:/NAME/STAGE,
    runs:/RUN_ID/PATH, or a local model folder."""

    tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        validation_alias=AliasChoices("MODEL_API_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    """MLflow tracking/registry URI (sqlite:///... or http://...); MLFLOW_TRACKING_URI is honoured."""

    registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_API_REGISTRY_URI", "MLFLOW_REGISTRY_URI"),
    )
    """MLflow model registry URI when it differs from the tracking URI; MLFLOW_REGISTRY_URI is honoured."""

    host: str = "127.0.0.1"
    """Interface the server binds to (0.0.0.0 in the container image)."""

    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port the server listens on."""

    model_threads: int = Field(default=1, ge=1, le=64)
    """Threads that run model predictions; model work never runs on the event loop, except the
    compiled fast path on batches of up to 256 rows (see `fastserve.py`)."""

    max_rows: int = Field(default=1000, ge=1)
    """Most rows one /predict request may carry; more is a 413."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted, enforced while the body is read; more is a 413."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service and the server."""

    startup_retry_s: float = Field(default=30.0, ge=0)
    """Time budget for retrying transient registry errors at startup before exiting non-zero."""

    batching: bool = True
    """Merge concurrent predictions into shared model calls (micro-batching)."""

    batch_max_rows: int = Field(default=1024, ge=1)
    """Most rows in one model call; a request with more rows runs alone. Measured on the demo
    model (100 trees behind a scaler and an encoder): 7.8 ms for 1 row, 7.9 ms for 64, 9.2 ms for
    512, 10.5 ms for 1024, so large batches cost little latency and multiply throughput."""

    batch_max_wait_ms: float = Field(default=10.0, ge=0)
    """Longest a queued request waits for companions while a model thread is free, and only when
    more are sure to come: other model threads are busy, or a recent batch held more requests than
    are queued (concurrent clients are sending again). Also capped by the last model call's
    duration, the most a wait can save. A lone client never waits."""

    fast_path: Literal["auto", "off"] = "auto"
    """auto: at load, compile a tree model on the contract path (numpy preprocessing and a tree
    evaluator) and serve it when the check finds every label and probability bit equal to the
    model's; off: the model itself always answers."""

    fast_path_check_rows: int = Field(default=50_000, ge=1000)
    """Rows the fast path is checked on at load against the model (its split thresholds, one
    float32 step either side, NaN, categories, random rows); more rows, a longer load."""

    reload_interval_s: float = Field(default=30.0, ge=0)
    """How often to ask the registry which version a movable URI (alias, latest, stage) names,
    and roll out a new one without downtime; 0 turns following off."""

    reload_accept_schema_change: bool = False
    """Serve a new version even when its input contract would refuse requests the old one took."""

    drain_grace_s: float = Field(default=3.0, ge=0)
    """After SIGTERM, /ready answers 503 at once but requests are still accepted this long, so
    load balancers stop sending traffic before connections are refused."""

    shutdown_timeout_s: float = Field(default=20.0, gt=0)
    """After the grace, how long requests in flight and in the batch queue get to finish."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes (uvicorn workers); above 1, metrics are shared through PROMETHEUS_MULTIPROC_DIR."""

    log_format: Literal["json", "text"] = "json"
    """Log lines as JSON objects (for log collectors) or as plain text (for a terminal)."""

    multiproc_dir: str = Field(
        default_factory=lambda: str(Path(tempfile.gettempdir()) / "model-api-metrics"),
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "MODEL_API_MULTIPROC_DIR"),
    )
    """Where worker processes keep their metrics (PROMETHEUS_MULTIPROC_DIR is honoured); emptied at start."""

    api_keys: SecretStr | None = None
    """Comma-separated API keys; when set (or api_keys_file is), every route but the probes, /metrics
    and the docs requires one as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'. Off when unset."""

    api_keys_file: Path | None = None
    """A file of API keys, one per line ('#' starts a comment): a mounted Kubernetes Secret. Read at
    startup, added to api_keys."""

    request_timeout_s: float = Field(default=30.0, gt=0)
    """A prediction request's budget, from admission (before its body is read) to its answer; a
    request may shorten it with the X-Request-Timeout header (seconds). Past it, a request still
    queued is answered 504 and never computed; one the model is running is answered 504 too."""

    max_in_flight: int = Field(default=64, ge=0)
    """Most prediction requests a worker holds at once (reading, queued and running); past it a
    request is refused at once with 503 (overloaded) and Retry-After, before its body is read.
    0: no bound. Chosen with `make overload` (see the README's Overload section)."""

    pace_per_turn: int = Field(default=16, ge=0)
    """While the worker sheds (it refused a request in the last 50 ms), admitted prediction
    requests start at most this many per turn of its event loop, in arrival order, counted in
    flight while they wait. A refusal waits for the loop's current turn, so shorter turns answer
    refusals sooner. 0 turns pacing off. See the README's Overload section."""

    pace_turn_ms: float = Field(default=5.0, ge=0)
    """While pacing, the longest turn of the event loop wanted, in milliseconds: a longer turn cuts
    the requests the next turns start by a quarter (down to a quarter of pace_per_turn), a shorter
    one adds one (up to pace_per_turn); `http_protocol.Pace`. 0: the pace stays at pace_per_turn.
    5 halved the refusal p99 of `make overload` at about the same median admitted req/s (five
    rounds; one lost a third); 3 cost admitted requests. See the README's Overload section."""

    max_loop_lag_ms: float = Field(default=0.0, ge=0)
    """While the worker's event loop runs more than this late (its core is saturated), new
    prediction requests are refused as past max_in_flight are; 0 (the default) turns the check off.
    20 held admitted p99 near 100 ms under a 3x spike, but refused 0.1-0.5% at half load."""

    gc_threshold: int = Field(default=10_000, ge=1, le=2**31 - 1)
    """The garbage collector's young-generation threshold while the model is served (the first value
    of `gc.set_threshold`, at most what it takes, 2**31 - 1; Python 3.11's default is 700, which
    `MODEL_API_GC_THRESHOLD=700` restores). The fast path's requests make no cyclic garbage, so under
    load the default's collections only walk the objects of requests in flight: about 7% of the core
    at 64 connections. 10,000 is twice the objects 64 in-flight single-row requests hold at once;
    garbage cycles wait until that many objects are new (see the README's Performance section)."""

    cors_origins: str = ""
    """Comma-separated origins browsers may call the API from ('*' for any); CORS is off when empty."""

    inference_log: Literal["off", "file", "http"] = "off"
    """Inference logs (one record per answered request, with its inputs and outputs): off, a JSON
    Lines file (inference_log_path), or CloudEvents POSTed to inference_log_url as KServe's logger does."""

    inference_log_path: str = "data/inference-log.jsonl"
    """The inference log file; '{pid}' becomes the process id (one file a worker when workers > 1)."""

    inference_log_max_bytes: int = Field(default=100 * 2**20, ge=0)
    """Size at which the inference log file is rotated to PATH.1 (PATH.2, ...); 0 never rotates."""

    inference_log_backups: int = Field(default=5, ge=0)
    """Rotated inference log files kept; 0 truncates the file when it is full."""

    inference_log_url: str = ""
    """Collector the inference log POSTs CloudEvents to (http:// or https://) when inference_log is http."""

    inference_log_timeout_s: float = Field(default=2.0, gt=0)
    """Longest the inference log waits on the collector per connect, send or read before it fails a batch."""

    inference_log_sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of answered requests recorded in the inference log (0..1); a skipped one costs a random draw."""

    inference_log_queue_size: int = Field(default=10_000, ge=1)
    """Records waiting for the inference log writer at most; beyond, records are dropped and counted."""

    inference_log_redact: str = ""
    """Comma-separated input field names written as "[redacted]" in the inference log."""

    inference_log_hash: str = ""
    """Comma-separated input field names written as salted SHA-256 (HMAC) hex digests; equal values join."""

    inference_log_hash_salt: SecretStr | None = None
    """Key (salt) of the inference log's field digests; required when inference_log_hash names fields."""

    reference_profile: Path | None = None
    """A reference profile of the training inputs (JSON, `profile.Profile.to_dict()`'s shape, made
    by the training job) for the feature metrics; without one, the model's input example is used."""

    shadow_uri: str = ""
    """A challenger scored on a sample of requests after each client has its answer
    (models:/NAME@challenger, followed like the served model); off when empty."""

    shadow_sample_rate: float = Field(default=0.1, ge=0, le=1)
    """Share of answered requests the challenger also scores (0..1)."""

    shadow_queue_size: int = Field(default=256, ge=1)
    """Requests waiting for the challenger's thread at most (scored together, their rows in one
    model call where they merge); beyond, they are dropped and counted."""

    shadow_budget: float = Field(default=0.05, gt=0, le=1)
    """Most share of one thread's time the challenger takes: after scoring for t seconds its
    thread rests t * (1 - budget) / budget, while new requests wait in its queue or are dropped."""
