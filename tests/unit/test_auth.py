"""API keys: where they come from, which paths they guard, and that a setting never shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from model_api.middleware.api_keys import ApiKeysError, is_open, load_api_keys
from model_api.settings import Settings


def test_no_keys_by_default() -> None:
    assert load_api_keys(Settings()) == []


def test_keys_from_the_variable_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# rotated 2026-11\nfile-key-1\n\n  file-key-2  # the old one, until Friday\n")
    monkeypatch.setenv("MODEL_API_API_KEYS", " env-key-1 ,env-key-2,")
    monkeypatch.setenv("MODEL_API_API_KEYS_FILE", str(secret))
    settings = Settings()
    assert load_api_keys(settings) == ["env-key-1", "env-key-2", "file-key-1", "file-key-2"]
    assert "env-key-1" not in repr(settings) and "env-key-1" not in str(settings.model_dump())


def test_a_missing_keys_file_names_the_file_and_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(ApiKeysError, match=r"MODEL_API_API_KEYS_FILE .*missing"):
        load_api_keys(Settings(api_keys_file=tmp_path / "missing"))


def test_keys_set_but_empty_refuse_to_start(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ApiKeysError, match="hold no key"):
        load_api_keys(Settings(api_keys_file=empty))
    with pytest.raises(ApiKeysError, match="hold no key"):
        load_api_keys(Settings(api_keys=SecretStr(" , ")))


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/docs-assets/swagger-ui-bundle.js",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/churn/ready",
        "/v2/models/churn/versions/3/ready",
        "/v1/models/churn",
    ],
)
def test_probes_scrapers_and_docs_are_open(path: str) -> None:
    assert is_open(path)


@pytest.mark.parametrize(
    "path",
    [
        "/predict",
        "/predict/",
        "/model/info",
        "/v1/models/churn:predict",
        "/v1/models",
        "/v2/models/churn",
        "/v2/models/churn/infer",
        "/v2/models/churn/versions/3/infer",
        "/v2/health/ready/../../models/churn/infer",
        "/admin/reload",
        "/health/../predict",
        "/docs-assetsX",
        "/",
        "/anything-added-later",
    ],
)
def test_everything_else_needs_a_key(path: str) -> None:
    assert not is_open(path)
