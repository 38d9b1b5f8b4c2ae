"""The OpenAPI document: /predict described with the served model's own contract and input
example, and the API-key schemes when keys are required. Rebuilt after every rollout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from model_api.contract import InputSchema
from model_api.dataplane import DataPlane
from model_api.features import INT_RANGE, NUMBER_LIMIT, Feature, Kind
from model_api.middleware.api_keys import is_open

BEARER = "BearerAuth"
API_KEY = "ApiKeyAuth"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    BEARER: {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    API_KEY: {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The API key."},
}


PYFUNC_PREDICT_REQUEST: dict[str, Any] = {
    "type": "object",
    "title": "PredictRequest",
    "description": "Rows as records ('instances') or in signature order ('features'), read as MLflow's "
    "dataframe_records and dataframe_split (instances for a tensor signature); 'params' for the model. "
    "The model's signature, which MLflow enforces, is at /model/info.",
    "properties": {
        "instances": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "features": {"type": "array", "minItems": 1},
        "params": {"type": "object"},
        "return_probabilities": {"type": "boolean", "default": False},
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["features"]}],
    "additionalProperties": False,
}


def feature_schema(feature: Feature) -> dict[str, Any]:
    """One feature's JSON schema (OpenAPI 3.1)."""
    schema: dict[str, Any]
    if feature.kind in (Kind.DOUBLE, Kind.FLOAT):
        schema = {"type": "number", "minimum": -NUMBER_LIMIT, "maximum": NUMBER_LIMIT}
    elif feature.kind in (Kind.LONG, Kind.INTEGER):
        low, high = INT_RANGE[feature.kind]
        schema = {"type": "integer", "format": "int64" if feature.kind is Kind.LONG else "int32"}
        schema |= {"minimum": low, "maximum": high}
    elif feature.kind is Kind.BOOLEAN:
        schema = {"type": "boolean"}
    else:
        schema = {"type": "string"}
    if feature.categories is not None:
        key = "examples" if feature.accepts_unknown else "enum"
        schema[key] = list(feature.categories)
    if not feature.required:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def predict_schemas(schema: InputSchema, max_rows: int) -> dict[str, dict[str, Any]]:
    """Component schemas: an instance, and the /predict request."""
    instance = {
        "type": "object",
        "title": "Instance",
        "description": "One row, keyed by the model's feature names.",
        "properties": {f.name: feature_schema(f) for f in schema.features},
        "required": [f.name for f in schema.features if f.required],
        "additionalProperties": False,
    }
    row = {
        "type": "array",
        "description": "One row, values in signature order: " + ", ".join(schema.names),
        "prefixItems": [feature_schema(f) for f in schema.features],
        "items": False,
        "minItems": len(schema.features),
        "maxItems": len(schema.features),
    }
    rows = {"minItems": 1, "maxItems": max_rows}
    request = {
        "type": "object",
        "title": "PredictRequest",
        "description": "Rows as records ('instances') or in signature order ('features').",
        "properties": {
            "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}} | rows,
            "features": {"type": "array", "items": row} | rows,
            "return_probabilities": {"type": "boolean", "default": False},
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["features"]}],
        "additionalProperties": False,
    }
    return {"Instance": instance, "PredictRequest": request}


def predict_examples(schema: InputSchema) -> dict[str, Any]:
    """Swagger examples built from the model's own input example."""
    records = [dict(r) for r in schema.example] or [schema.placeholder_row()]
    return {
        "instances": {
            "summary": "Records keyed by feature name (the model's input example)",
            "value": {"instances": records, "return_probabilities": True},
        },
        "features": {
            "summary": "Rows in signature order",
            "value": {"features": [[r.get(n) for n in schema.names] for r in records]},
        },
    }


def _document_auth(doc: dict[str, Any]) -> None:
    """Declare the key schemes, with a 401, on every protected operation."""
    doc.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for path, operations in doc.get("paths", {}).items():
        if is_open(path):
            continue
        for operation in operations.values():
            operation["security"] = [{BEARER: []}, {API_KEY: []}]
            operation.setdefault("responses", {}).setdefault(
                "401",
                {
                    "description": "No API key, or not a valid one.",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                    },
                },
            )


def install_openapi(app: FastAPI, plane: DataPlane, *, secured: bool) -> Callable[[], None]:
    """Serve the document built from the served model; returns the function that drops the
    cached document (call it when the served model changes)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        if secured:
            _document_auth(doc)
        predictor = plane.predictor
        if predictor is None:  # before the model is loaded: a placeholder, not cached
            schemas["PredictRequest"] = {"type": "object", "title": "PredictRequest"}
            return doc
        if predictor.schema is None:  # the pyfunc path: MLflow enforces the signature (/model/info)
            schemas["PredictRequest"] = PYFUNC_PREDICT_REQUEST
            app.openapi_schema = doc
            return doc
        schemas.update(predict_schemas(predictor.schema, plane.settings.max_rows))
        body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
        body["examples"] = predict_examples(predictor.schema)
        app.openapi_schema = doc
        return doc

    def forget() -> None:
        app.openapi_schema = None

    app.openapi = openapi  # type: ignore[method-assign]
    return forget
