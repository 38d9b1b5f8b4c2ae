"""Model URIs: every form the service reads, and the refusal of the rest naming the forms that work."""

from __future__ import annotations

import pytest

from model_api.errors import InvalidModelURI
from model_api.model_uri import RefKind, parse_model_uri


@pytest.mark.parametrize(
    ("uri", "kind", "fields"),
    [
        ("models:/Churn@champion", RefKind.ALIAS, {"name": "Churn", "alias": "champion"}),
        ("models:/Churn/3", RefKind.VERSION, {"name": "Churn", "version": "3"}),
        ("models:/Churn/latest", RefKind.LATEST, {"name": "Churn"}),
        ("models:/Churn/Production", RefKind.STAGE, {"name": "Churn", "stage": "Production"}),
        ("models:/Churn/staging", RefKind.STAGE, {"name": "Churn", "stage": "Staging"}),
        ("runs:/abc123/model", RefKind.RUN, {"run_id": "abc123", "path": "model"}),
        ("/srv/models/churn", RefKind.PATH, {"path": "/srv/models/churn"}),
        ("file:///srv/models/churn", RefKind.PATH, {"path": "/srv/models/churn"}),
    ],
)
def test_parses_every_supported_form(uri: str, kind: RefKind, fields: dict[str, str]) -> None:
    ref = parse_model_uri(uri)
    assert ref.kind is kind
    for key, value in fields.items():
        assert getattr(ref, key) == value


@pytest.mark.parametrize(
    "uri",
    [
        "models:/Churn",
        "models:/Churn/",
        "models:/Churn/v2",
        "models:/@x",
        "runs:/abc",
        "s3://bucket/model",
        "",
    ],
)
def test_refuses_unreadable_uris_naming_the_forms_that_work(uri: str) -> None:
    with pytest.raises(InvalidModelURI) as err:
        parse_model_uri(uri)
    assert "models:/NAME@ALIAS" in str(err.value)


def test_bare_name_error_explains_logged_model_ids() -> None:
    with pytest.raises(InvalidModelURI, match="logged-model id"):
        parse_model_uri("models:/ChurnPredictor")
