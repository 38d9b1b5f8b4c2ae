"""Open Inference Protocol (KServe V2) model metadata: the served model's inputs and outputs as
tensors, from our contract or, on the pyfunc path, from its MLflow signature.

Source: the Open Inference Protocol's model metadata response (inference_rest.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_api.api.v2_codec import KIND_DATATYPE, PREDICT, PREDICT_PROBA, datatype_of
from model_api.predictor import Predictor


def model_metadata(predictor: Predictor) -> dict[str, Any]:
    """The model's inputs and outputs from its signature; -1 stands for the number of rows."""
    inputs = (
        [
            {"name": f.name, "datatype": KIND_DATATYPE[f.kind], "shape": [-1]}
            for f in predictor.schema.features
        ]
        if predictor.schema is not None
        else _signature_tensors(predictor.spec.input_schema)
    )
    outputs: list[dict[str, Any]] = [{"name": PREDICT, "datatype": _label_datatype(predictor), "shape": [-1]}]
    if predictor.has_probabilities:
        outputs.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(predictor.classes)]})
    return {
        "name": predictor.name,
        "versions": [predictor.version] if predictor.version is not None else [],
        "platform": f"mlflow_{predictor.loaded.flavor}",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"content_type": "pd"},
    }


_MLFLOW_DATATYPE = {k.value: v for k, v in KIND_DATATYPE.items()}
_NUMPY_DATATYPE = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}


def _label_datatype(predictor: Predictor) -> str:
    if predictor.classes:
        return datatype_of(predictor.classes)
    signature = predictor.loaded.signature
    specs = getattr(getattr(signature, "outputs", None), "inputs", None) or []
    if specs:
        spec_type = getattr(specs[0], "type", None)
        name = str(getattr(spec_type, "name", "")).lower()
        if name in _MLFLOW_DATATYPE:
            return _MLFLOW_DATATYPE[name]
        kind = getattr(spec_type, "kind", "")
        if kind in _NUMPY_DATATYPE:
            return _NUMPY_DATATYPE[kind]
    return "FP64"


def _signature_tensors(schema: Any) -> list[dict[str, Any]]:
    """The inputs of an MLflow signature as tensors (pyfunc path); none for a model without one."""
    if schema is None:
        return []
    out = []
    for i, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else f"input-{i}"
        if schema.is_tensor_spec():
            kind = np.dtype(spec.type).kind
            out.append(
                {"name": name, "datatype": _NUMPY_DATATYPE.get(kind, "BYTES"), "shape": list(spec.shape)}
            )
        else:
            type_name = str(getattr(spec.type, "name", "")).lower()
            out.append({"name": name, "datatype": _MLFLOW_DATATYPE.get(type_name, "BYTES"), "shape": [-1]})
    return out
