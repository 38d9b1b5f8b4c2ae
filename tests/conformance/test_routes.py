"""Our server against MLflow's own pyfunc model, for every zoo model, on every route.

For each entry a real server (uvicorn in a thread) serves the model from the zoo's sqlite
registry, with batching on (and, for models on the contract path, where rows of concurrent
requests are merged, with batching off too). `/invocations` gets every body form, each row alone,
the bad rows and the params variants (harness.check_entry); `/predict`, KServe V1 and V2 get the
entry's rows and must answer the same predictions as MLflow's `dataframe_records`, `instances` and
`dataframe_split` forms. Concurrent single-row requests, merged by the batcher, must each answer
what the row answers alone. Differences from MLflow that are ours on purpose are listed, with a
sentence each, in reference.KNOWN_MLFLOW_DIFFERENCES.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from model_api.main import create_app
from model_api.settings import Settings
from tests.conformance.harness import check_entry, v2_columns
from tests.conformance.reference import (
    KNOWN_MLFLOW_DIFFERENCES,
    build_body,
    json_diff,
    load_reference_model,
    pick,
    reference_answer,
    size,
)
from tests.conformance.zoo import SPECS, Entry, Zoo
from tests.support import server_in_thread

pytestmark = pytest.mark.integration

NAMES = [spec.name for spec in SPECS]
NON_FINITE = {"py-nan-output"}
"""Models answering NaN or Infinity: we write null, as strict JSON must (MLflow writes NaN)."""


@pytest.fixture(scope="module", params=NAMES)
def served(request: pytest.FixtureRequest, zoo: Zoo) -> Iterator[tuple[Entry, str, str]]:
    entry = zoo.entries.get(request.param)
    if entry is None:
        pytest.fail(f"{request.param} did not build: {zoo.failures.get(request.param)}")
    settings = Settings(model_uri=entry.uri, tracking_uri=zoo.tracking_uri, reload_interval_s=0)
    with server_in_thread(create_app(settings)) as url:
        path = httpx.get(f"{url}/model/info", timeout=30).json()["path"]
        yield entry, url, path


def test_invocations_answers_as_mlflow(served: tuple[Entry, str, str]) -> None:
    entry, url, _ = served
    problems = check_entry(url, entry, non_finite_as_null=entry.name in NON_FINITE)
    assert problems == []


def _expected(entry: Entry, form: str) -> Any:
    answer = reference_answer(load_reference_model(entry), build_body(entry, form))
    assert answer.status == 200, answer.body
    return answer.body["predictions"]


def _v2_predictions(outputs: list[dict[str, Any]], expected: Any) -> Any:
    """V2 response tensors back into MLflow's JSON predictions, by the expected shape."""
    if len(outputs) == 1 and outputs[0]["name"] == "predict":
        return np.asarray(outputs[0]["data"], dtype=object).reshape(outputs[0]["shape"]).tolist()
    columns = {o["name"]: o["data"] for o in outputs}
    if isinstance(expected, list):  # a DataFrame: records
        n = len(next(iter(columns.values())))
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    return columns


def _column_entry(entry: Entry) -> bool:
    """Column models without params whose values are scalars (V2 tensors carry no per-row arrays)."""
    scalar = all(not isinstance(v, list | dict) for r in entry.rows or [] for v in r.values())
    return entry.rows is not None and entry.signature in ("columns", "none") and not entry.params and scalar


def test_predict_v1_and_v2_answer_as_mlflow(served: tuple[Entry, str, str]) -> None:
    entry, url, _ = served
    lenient = entry.name in NON_FINITE
    if not _column_entry(entry):
        pytest.skip("the /predict, V1 and V2 mapping is checked on column models without params")
    rows = entry.rows or []
    with httpx.Client(timeout=30) as client:
        if (entry.name, "dataframe_records") not in KNOWN_MLFLOW_DIFFERENCES:
            got = client.post(f"{url}/predict", json={"instances": rows})
            assert got.status_code == 200, got.text
            assert (
                json_diff(
                    got.json()["predictions"],
                    _expected(entry, "dataframe_records"),
                    non_finite_as_null=lenient,
                )
                is None
            )
        if (entry.name, "instances") not in KNOWN_MLFLOW_DIFFERENCES:
            got = client.post(f"{url}/v1/models/{entry.model_name}:predict", json={"instances": rows})
            assert got.status_code == 200, got.text
            assert (
                json_diff(
                    got.json()["predictions"], _expected(entry, "instances"), non_finite_as_null=lenient
                )
                is None
            )
        if (entry.name, "dataframe_split") not in KNOWN_MLFLOW_DIFFERENCES:
            expected = _expected(entry, "dataframe_split")
            inputs = v2_columns(rows)
            got = client.post(f"{url}/v2/models/{entry.model_name}/infer", json={"inputs": inputs})
            assert got.status_code == 200, got.text
            decoded = _v2_predictions(got.json()["outputs"], expected)
            assert json_diff(decoded, expected, non_finite_as_null=lenient) is None


def test_merged_rows_answer_as_each_row_alone(served: tuple[Entry, str, str]) -> None:
    """Concurrent single-row requests (merged into shared model calls on the contract path) each
    get what their row gets alone."""
    entry, url, path = served
    if not entry.row_independent or (entry.name, "dataframe_records") in KNOWN_MLFLOW_DIFFERENCES:
        pytest.skip("only row-independent models may have rows merged")
    form = "dataframe_records" if entry.rows is not None else "inputs"
    bodies = [build_body(pick(entry, [i]), form) for i in range(size(entry))] * 4
    with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda b: client.post(
                    f"{url}/invocations", content=b.content, headers={"content-type": b.content_type}
                ),
                bodies,
            )
        )
    model = load_reference_model(entry)
    for body, answer in zip(bodies, answers, strict=True):
        expected = reference_answer(model, body)
        known = KNOWN_MLFLOW_DIFFERENCES.get((entry.name, "rows alone"))
        if known is None:
            assert answer.status_code == expected.status, answer.text
            assert json_diff(answer.json(), expected.body) is None
    if path == "contract":
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert "model_batch_size_count" in metrics


@pytest.mark.parametrize("name", ["sk-pipeline", "sk-optional-string", "sk-classifier"])
def test_contract_models_without_batching(zoo: Zoo, name: str) -> None:
    entry = zoo.entries[name]
    settings = Settings(
        model_uri=entry.uri, tracking_uri=zoo.tracking_uri, reload_interval_s=0, batching=False
    )
    with server_in_thread(create_app(settings)) as url:
        assert httpx.get(f"{url}/model/info", timeout=30).json()["path"] == "contract"
        assert check_entry(url, entry) == []


def test_a_null_string_is_nan_whatever_its_companions(zoo: Zoo) -> None:
    """The trainer's intent where MLflow is wrong: a row with a null string answers alone what it
    answers next to rows holding strings (MLflow's pyfunc gives another answer alone)."""
    entry = zoo.entries["sk-optional-string"]
    rows = entry.rows or []
    nulls = [i for i, r in enumerate(rows) if any(v is None for v in r.values())]
    assert nulls, "the entry has a row with a null"
    settings = Settings(model_uri=entry.uri, tracking_uri=zoo.tracking_uri, reload_interval_s=0)
    with server_in_thread(create_app(settings)) as url, httpx.Client(timeout=30) as client:
        together = client.post(f"{url}/invocations", json={"dataframe_records": rows}).json()["predictions"]
        for i in nulls:
            alone = client.post(f"{url}/invocations", json={"dataframe_records": [rows[i]]}).json()[
                "predictions"
            ]
            assert alone == [together[i]]
