"""Autoscaling on requests in flight per pod as well as CPU, with KEDA: deploy/k8s-keda (the base with
its HPA swapped for a ScaledObject) and deploy/kserve/inferenceservice-keda.yaml.

The overlay builds and changes nothing but the autoscaler; the ScaledObject passes KEDA's CRD schema
strictly (vendored in tests/schemas, see derive.py there); both agree with the base HPA, the
ServiceMonitor's job, the plain InferenceService and each other; every query parses (promtool) and
names a metric the server exports or is about to (test_grafana.AHEAD_OF_SERVER)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.deploy.test_grafana import AHEAD_OF_SERVER, exported_metrics
from tests.deploy.test_manifests import KUBERNETES_VERSION, kubectl, one
from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
K8S_KEDA = ROOT / "deploy" / "k8s-keda"
KSERVE = ROOT / "deploy" / "kserve"
SCHEMA = ROOT / "tests" / "schemas" / "scaledobject.keda.sh.v1alpha1.json"
SERVICE_MONITOR = ROOT / "deploy" / "prometheus" / "servicemonitor.yaml"
IN_FLIGHT = "requests_in_flight"
KEDA_CLASS = "serving.kserve.io/autoscalerClass"
MATCHER = re.compile(r'(\w+)\s*(=~|=)\s*"([^"]*)"')


def kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return kustomize(K8S_KEDA)


def schema_errors(doc: Any) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(doc)]


def trigger(scaled_object: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == kind]
    return found


def matchers(query: str, metric: str) -> dict[str, tuple[str, str]]:
    """The label matchers of `metric{...}` in a PromQL query: label -> (operator, value)."""
    selector = re.search(rf"\b{metric}\{{([^}}]*)\}}", query)
    assert selector, f"{metric} is not selected in {query}"
    return {label: (op, value) for label, op, value in MATCHER.findall(selector[1])}


def isvc(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((KSERVE / name).read_text())
    assert isinstance(doc, dict)
    return doc


def external_in_flight(doc: dict[str, Any]) -> dict[str, Any]:
    (external,) = [
        m["external"] for m in doc["spec"]["predictor"]["autoScaling"]["metrics"] if m["type"] == "External"
    ]
    return external  # type: ignore[no-any-return]


# -- the overlay -----------------------------------------------------------------------------------


def test_the_overlay_swaps_the_hpa_for_a_scaled_object_and_nothing_else(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    assert sorted(d["kind"] for d in overlay) == sorted(
        [d["kind"] for d in base if d["kind"] != "HorizontalPodAutoscaler"] + ["ScaledObject"]
    )
    assert {d["metadata"]["namespace"] for d in overlay} == {"mlops"}
    kept = [d for d in base if d["kind"] != "HorizontalPodAutoscaler"]
    assert [d for d in overlay if d["kind"] != "ScaledObject"] == kept


def test_the_overlay_passes_the_kubernetes_and_keda_schemas_strictly(overlay: list[dict[str, Any]]) -> None:
    for doc in overlay:
        if doc["kind"] == "ScaledObject":
            assert doc["apiVersion"] == "keda.sh/v1alpha1"
            assert schema_errors(doc) == []
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"]["triggers"][1].update(metdata={}),
        lambda d: d["spec"].update(minReplicaCount="2"),
        lambda d: d["spec"]["triggers"][1]["metadata"].update(threshold=16),
        lambda d: d["spec"].pop("scaleTargetRef"),
        lambda d: d["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(
            stabilizationWindowSeconds=7200
        ),
    ],
)
def test_the_keda_schema_refuses_typos_and_wrong_types(overlay: list[dict[str, Any]], break_it: Any) -> None:
    doc = copy.deepcopy(one(overlay, "ScaledObject"))
    break_it(doc)
    assert schema_errors(doc), "the schema accepted a broken ScaledObject"


def test_the_scaled_object_keeps_the_hpa_target_bounds_and_behaviour(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    hpa = one(base, "HorizontalPodAutoscaler")["spec"]
    spec = one(overlay, "ScaledObject")["spec"]
    deployment = one(overlay, "Deployment")
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    (cpu_metric,) = [m["resource"] for m in hpa["metrics"] if m["type"] == "Resource"]
    cpu = trigger(one(overlay, "ScaledObject"), "cpu")
    assert cpu["metricType"] == cpu_metric["target"]["type"] == "Utilization"
    assert cpu["metadata"] == {"value": str(cpu_metric["target"]["averageUtilization"])}
    autoscaler = spec["advanced"]["horizontalPodAutoscalerConfig"]
    assert autoscaler == {
        "name": one(base, "HorizontalPodAutoscaler")["metadata"]["name"],
        "behavior": hpa["behavior"],
    }


def test_the_in_flight_trigger_selects_this_service_per_pod(overlay: list[dict[str, Any]]) -> None:
    prometheus = trigger(one(overlay, "ScaledObject"), "prometheus")
    assert prometheus["metricType"] == "AverageValue"  # KEDA divides the total by the pods
    metadata = prometheus["metadata"]
    assert re.fullmatch(r"https?://[\w.-]+(:\d+)?", metadata["serverAddress"])
    assert float(metadata["threshold"]) > 0
    assert metadata["query"].startswith("sum(")  # one number: the total over the pods
    monitor = yaml.safe_load(SERVICE_MONITOR.read_text())["spec"]
    job = one(overlay, "Service")["metadata"]["labels"][monitor["jobLabel"]]
    assert matchers(metadata["query"], IN_FLIGHT) == {
        "job": ("=", job),
        "namespace": ("=", one(overlay, "Deployment")["metadata"]["namespace"]),
    }


# -- the InferenceService --------------------------------------------------------------------------


def test_the_keda_inference_service_is_the_plain_one_plus_autoscaling() -> None:
    plain, keda = isvc("inferenceservice.yaml"), isvc("inferenceservice-keda.yaml")
    assert keda["metadata"]["annotations"].pop(KEDA_CLASS) == "keda"
    assert keda["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"  # KEDA needs it
    autoscaling = keda["spec"]["predictor"].pop("autoScaling")
    scale_metric = plain["spec"]["predictor"].pop("scaleMetric")
    scale_target = plain["spec"]["predictor"].pop("scaleTarget")
    assert keda == plain
    (cpu,) = [m["resource"] for m in autoscaling["metrics"] if m["type"] == "Resource"]
    assert cpu["name"] == scale_metric == "cpu"
    assert cpu["target"] == {"type": "Utilization", "averageUtilization": scale_target}
    assert [m["type"] for m in autoscaling["metrics"]] == ["Resource", "External"]


def test_the_inference_service_scales_on_its_own_pods_in_flight_like_the_deployment(
    overlay: list[dict[str, Any]],
) -> None:
    doc = isvc("inferenceservice-keda.yaml")
    external = external_in_flight(doc)
    assert external["metric"]["backend"] == "prometheus"
    # KServe passes `value` as the KEDA threshold (and reads no other target field).
    assert external["target"]["type"] == "Value"
    prometheus = trigger(one(overlay, "ScaledObject"), "prometheus")["metadata"]
    assert float(external["target"]["value"]) == float(prometheus["threshold"])
    assert external["metric"]["serverAddress"] == prometheus["serverAddress"]
    found = matchers(external["metric"]["query"], IN_FLIGHT)
    assert found["namespace"] == ("=", doc["metadata"]["namespace"])
    op, pods = found["pod"]
    predictor = f"{doc['metadata']['name']}-predictor"  # KServe's Deployment and its pods
    assert op == "=~"
    assert re.fullmatch(pods, f"{predictor}-7d4b9c8f6-x2x9q")
    assert not re.fullmatch(pods, f"{doc['metadata']['name']}-transformer-7d4b9c8f6-x2x9q")


# -- the queries -----------------------------------------------------------------------------------


def queries(overlay: list[dict[str, Any]]) -> list[str]:
    return [
        trigger(one(overlay, "ScaledObject"), "prometheus")["metadata"]["query"],
        external_in_flight(isvc("inferenceservice-keda.yaml"))["metric"]["query"],
    ]


def test_every_query_parses(overlay: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make system-deps` installs the Debian package prometheus")
    rules = [{"record": f"autoscaling:query_{i}", "expr": q} for i, q in enumerate(queries(overlay))]
    path = tmp_path / "autoscaling.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "autoscaling", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_metric_the_queries_name_is_exported_or_announced(
    overlay: list[dict[str, Any]], client: TestClient, example_rows: Any
) -> None:
    names = {m for q in queries(overlay) for m in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", q)}
    assert names == {IN_FLIGHT}
    assert names <= exported_metrics(client, example_rows) | AHEAD_OF_SERVER
