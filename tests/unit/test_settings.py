from __future__ import annotations

import pytest
from pydantic import ValidationError

from model_api.settings import Settings


def test_defaults_serve_the_demo_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings()
    assert settings.model_uri == "models:/ChurnPredictor@champion"
    assert settings.port == 8000
    assert settings.tracking_uri.startswith("sqlite:///")


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_API_MODEL_URI", "models:/Other/3")
    monkeypatch.setenv("MODEL_API_PORT", "9001")
    monkeypatch.setenv("MODEL_API_MAX_ROWS", "7")
    settings = Settings()
    assert (settings.model_uri, settings.port, settings.max_rows) == ("models:/Other/3", 9001, 7)


def test_honours_standard_mlflow_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert Settings().tracking_uri == "http://127.0.0.1:5000"


def test_prefixed_tracking_uri_wins_over_mlflow_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MODEL_API_TRACKING_URI", "sqlite:///x.db")
    assert Settings().tracking_uri == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MODEL_API_PORT", "0"),
        ("MODEL_API_MODEL_THREADS", "0"),
        ("MODEL_API_LOG_LEVEL", "loud"),
        ("MODEL_API_MAX_ROWS", "-1"),
        ("MODEL_API_GC_THRESHOLD", "0"),
        ("MODEL_API_GC_THRESHOLD", str(2**31)),  # more than gc.set_threshold takes
    ],
)
def test_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_fields_can_be_passed_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert Settings(tracking_uri="sqlite:///given.db").tracking_uri == "sqlite:///given.db"


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    from pydantic import AliasChoices

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = (
            [str(a) for a in alias.choices]
            if isinstance(alias, AliasChoices)
            else [f"MODEL_API_{name.upper()}"]
        )
        assert any(f"`{n}`" in readme for n in names), f"{names} missing from the README"
