"""Rows as /predict and the KServe V1 protocol carry them: records, rows in signature order, and
TF-serving `instances`; each turned into the served model's input (`inputs.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_api.errors import ErrorDetail, InvalidInput
from model_api.inputs import ModelInput, ModelSpec, parse_mlflow_json


@dataclass(frozen=True)
class Records:
    """Rows as objects keyed by column name (`where` names the field they came in)."""

    rows: Any
    where: str = "instances"

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        if spec.contract is not None:
            return spec.contract.parse_records(self.rows, max_rows, self.where)
        return parse_mlflow_json(
            {"dataframe_records": _rows_list(self.rows, self.where), "params": params}, spec, max_rows
        )


@dataclass(frozen=True)
class Rows:
    """Rows as lists of values in signature order (for a tensor signature, the rows of its tensor)."""

    rows: Any
    where: str = "features"

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        if spec.contract is not None:
            return spec.contract.parse_rows(self.rows, max_rows, self.where)
        rows = _rows_list(self.rows, self.where)
        if (
            spec.input_schema is not None
            and spec.input_schema.has_input_names()
            and not spec.input_schema.is_tensor_spec()
        ):
            split = {"columns": spec.input_schema.input_names(), "data": rows}
            return parse_mlflow_json({"dataframe_split": split, "params": params}, spec, max_rows)
        return parse_mlflow_json({"instances": rows, "params": params}, spec, max_rows)


@dataclass(frozen=True)
class Instances:
    """TF-serving style `instances` (the KServe V1 protocol), read as MLflow reads them."""

    instances: Any

    def to_model_input(self, spec: ModelSpec, params: dict[str, Any] | None, max_rows: int) -> ModelInput:
        if spec.contract is not None:
            rows = self.instances
            if type(rows) is list and rows and type(rows[0]) is dict:
                return spec.contract.parse_records(rows, max_rows, "instances")
            return spec.contract.parse_rows(rows, max_rows, "instances")
        return parse_mlflow_json(
            {"instances": _rows_list(self.instances, "instances"), "params": params}, spec, max_rows
        )


def _rows_list(rows: Any, where: str) -> list[Any]:
    if type(rows) is not list or not rows:
        raise InvalidInput(
            f"'{where}' must be a non-empty list of rows", [ErrorDetail("expected a list", field=where)]
        )
    return rows
