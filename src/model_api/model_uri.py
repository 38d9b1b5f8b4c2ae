"""Model URIs: the forms the service loads, parsed into what they name (no MLflow import)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from model_api.errors import InvalidModelURI

URI_FORMS = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest, models:/NAME/STAGE, "
    "runs:/RUN_ID/PATH, or a local model folder"
)
STAGES = {"production": "Production", "staging": "Staging", "archived": "Archived", "none": "None"}


class RefKind(StrEnum):
    """How a model URI names its model."""

    ALIAS = "alias"
    VERSION = "version"
    LATEST = "latest"
    STAGE = "stage"
    RUN = "run"
    PATH = "path"


@dataclass(frozen=True)
class ModelRef:
    """A parsed model URI."""

    uri: str
    kind: RefKind
    name: str | None = None
    alias: str | None = None
    version: str | None = None
    stage: str | None = None
    run_id: str | None = None
    path: str | None = None


_MODELS = re.compile(r"^models:/(?P<rest>.+)$")
_RUNS = re.compile(r"^runs:/(?P<run>[^/]+)/(?P<path>.+)$")


def parse_model_uri(uri: str) -> ModelRef:
    """Parse a model URI into what it names; raise InvalidModelURI naming the forms that work."""
    uri = uri.strip()
    if not uri:
        raise InvalidModelURI(f"the model URI is empty; use {URI_FORMS}")
    if m := _MODELS.match(uri):
        rest = m["rest"].strip("/")
        if "@" in rest:
            name, _, alias = rest.rpartition("@")
            if not name or not alias or "/" in alias or "/" in name:
                raise InvalidModelURI(f"cannot read {uri!r}; use {URI_FORMS}")
            return ModelRef(uri, RefKind.ALIAS, name=name, alias=alias)
        parts = rest.split("/")
        if len(parts) != 2 or not all(parts):
            raise InvalidModelURI(
                f"{uri!r} names no version: MLflow 3 reads a bare models:/NAME as a logged-model id. "
                f"Use {URI_FORMS}"
            )
        name, selector = parts
        if selector.isdigit():
            return ModelRef(uri, RefKind.VERSION, name=name, version=selector)
        if selector.lower() == "latest":
            return ModelRef(uri, RefKind.LATEST, name=name)
        if selector.lower() in STAGES:
            return ModelRef(uri, RefKind.STAGE, name=name, stage=STAGES[selector.lower()])
        raise InvalidModelURI(f"{uri!r}: {selector!r} is no version, alias or stage; use {URI_FORMS}")
    if uri.startswith("runs:/"):
        if m := _RUNS.match(uri):
            return ModelRef(uri, RefKind.RUN, run_id=m["run"], path=m["path"].strip("/"))
        raise InvalidModelURI(f"{uri!r} names no artifact path; use {URI_FORMS}")
    if uri.startswith("file://"):
        return ModelRef(uri, RefKind.PATH, path=uri[len("file://") :])
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", uri):
        raise InvalidModelURI(f"{uri!r}: unsupported scheme; use {URI_FORMS}")
    return ModelRef(uri, RefKind.PATH, path=uri)


MOVABLE = frozenset({RefKind.ALIAS, RefKind.LATEST, RefKind.STAGE})
"""References whose version the registry can move: followed by the rollout."""
