"""The Open Inference Protocol routes driven by a third-party client (Triton's HTTP client) over a
real uvicorn server, answers checked against the model's own predictions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from tritonclient.utils import InferenceServerException

from model_api.main import create_app
from model_api.registry import LoadedModel, parse_model_uri
from model_api.settings import Settings
from tests.support import server_in_thread

NUMPY = {"INT64": np.int64, "INT32": np.int32, "FP64": np.float64, "FP32": np.float32, "BOOL": np.bool_}


def client_for(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        url.removeprefix("http://"), connection_timeout=10, network_timeout=30
    )


@pytest.fixture
def served(settings: Settings) -> Iterator[triton.InferenceServerClient]:
    with server_in_thread(create_app(settings)) as url:
        client = client_for(url)
        try:
            yield client
        finally:
            client.close()


def columns(metadata: dict[str, Any], frame: pd.DataFrame) -> list[triton.InferInput]:
    """A DataFrame as one input per column, the way a pd-content-type client sends it."""
    inputs = []
    for spec in metadata["inputs"]:
        values = frame[spec["name"]].to_numpy()
        dtype = NUMPY.get(spec["datatype"], np.object_)
        tensor = triton.InferInput(spec["name"], [len(values)], spec["datatype"])
        tensor.set_data_from_numpy(values.astype(dtype), binary_data=False)
        inputs.append(tensor)
    return inputs


def test_health_and_metadata(served: triton.InferenceServerClient, champion: LoadedModel) -> None:
    assert served.is_server_live() and served.is_server_ready()
    assert served.is_model_ready("ChurnPredictor") and served.is_model_ready("ChurnPredictor", "1")
    assert not served.is_model_ready("ChurnPredictor", "2") and not served.is_model_ready("Other")
    assert served.get_server_metadata()["name"] == "model-api"
    metadata = served.get_model_metadata("ChurnPredictor", "1")
    assert [i["name"] for i in metadata["inputs"]] == [s.name for s in champion.signature.inputs.inputs]
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]


def test_infer_columns_matches_the_model(served: triton.InferenceServerClient, champion: LoadedModel) -> None:
    frame = champion.input_example
    assert frame is not None
    metadata = served.get_model_metadata("ChurnPredictor")
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")]
    result = served.infer("ChurnPredictor", columns(metadata, frame), outputs=outputs, request_id="r-42")
    assert result.get_response()["id"] == "r-42"
    assert result.as_numpy("predict").tolist() == champion.model.predict(frame).tolist()
    assert np.allclose(result.as_numpy("predict_proba"), champion.model.predict_proba(frame))


def test_client_sees_the_protocol_errors(served: triton.InferenceServerClient, champion: LoadedModel) -> None:
    frame = champion.input_example
    assert frame is not None
    metadata = served.get_model_metadata("ChurnPredictor")
    with pytest.raises(InferenceServerException, match="not served here") as missing:
        served.infer("Other", columns(metadata, frame))
    assert missing.value.status() == "404"
    bad = frame.copy()
    bad["contract"] = "weekly"
    with pytest.raises(InferenceServerException, match="contract: unknown category") as invalid:
        served.infer("ChurnPredictor", columns(metadata, bad))
    assert invalid.value.status() == "400"


def numeric_model(champion: LoadedModel) -> LoadedModel:
    """A real, tiny all-numeric model: the case for one 2-D numeric input."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    target = (frame["a"] + frame["b"] > 0).astype(np.int64)
    model = LogisticRegression().fit(frame, target)
    return dataclasses.replace(
        champion,
        ref=parse_model_uri("models:/Numeric/3"),
        model=model,
        signature=infer_signature(frame, target),
        input_example=frame.head(3),
        name="Numeric",
        version="3",
    )


def test_infer_one_2d_numeric_input(settings: Settings, champion: LoadedModel) -> None:
    loaded = numeric_model(champion)
    with server_in_thread(create_app(settings, loader=lambda _: loaded)) as url:
        client = client_for(url)
        try:
            rows = np.array([[0.5, 1.0, -2.0], [-1.0, -0.5, 3.0], [2.0, -3.0, 0.0]])
            tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
            tensor.set_data_from_numpy(rows, binary_data=False)
            asked = [triton.InferRequestedOutput(n, binary_data=False) for n in ("predict", "predict_proba")]
            result = client.infer("Numeric", [tensor], model_version="3", outputs=asked)
            frame = pd.DataFrame(rows, columns=["a", "b", "c"])
            assert result.as_numpy("predict").tolist() == loaded.model.predict(frame).tolist()
            assert np.allclose(result.as_numpy("predict_proba"), loaded.model.predict_proba(frame))
        finally:
            client.close()
