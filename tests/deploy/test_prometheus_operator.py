"""deploy/prometheus/: the ServiceMonitor and PrometheusRule are valid against the operator's CRD
schemas (vendored in tests/schemas/, see derive.py there), and carry the plain rule files' rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
SCHEMAS = ROOT / "tests" / "schemas"
# The Service that deploy/k8s exposes (written on the kserve branch): what the ServiceMonitor selects.
SERVICE_LABEL = ("app.kubernetes.io/name", "model-api")
SERVICE_PORT = ("http", 8000)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{kind}.monitoring.coreos.com.v1.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(kind: str, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(kind).iter_errors(doc)]


def test_service_monitor_is_valid() -> None:
    doc = load(PROMETHEUS / "servicemonitor.yaml")
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "ServiceMonitor"
    assert errors("servicemonitor", doc) == []


def test_prometheus_rule_is_valid() -> None:
    doc = load(PROMETHEUS / "prometheusrule.yaml")
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert errors("prometheusrule", doc) == []


def typo(d: Any) -> None:
    d["spec"]["endpoints"][0]["intervall"] = "15s"


def bad_duration(d: Any) -> None:
    d["spec"]["endpoints"][0]["interval"] = "often"


def rule_typo(d: Any) -> None:
    d["spec"]["groups"][1]["rules"][0]["fo"] = "5m"


@pytest.mark.parametrize(
    ("kind", "file", "break_it"),
    [
        (
            "servicemonitor",
            "servicemonitor.yaml",
            lambda d: d["spec"]["endpoints"][0].update(intervall="15s"),
        ),
        (
            "servicemonitor",
            "servicemonitor.yaml",
            lambda d: d["spec"]["endpoints"][0].update(interval="often"),
        ),
        ("servicemonitor", "servicemonitor.yaml", lambda d: d["spec"].update(selector="model-api")),
        (
            "prometheusrule",
            "prometheusrule.yaml",
            lambda d: d["spec"]["groups"][1]["rules"][0].update(fo="5m"),
        ),
        ("prometheusrule", "prometheusrule.yaml", lambda d: d["spec"]["groups"][1]["rules"][0].pop("expr")),
        ("prometheusrule", "prometheusrule.yaml", lambda d: d.update(kind="PrometheusRules")),
    ],
)
def test_the_schemas_refuse_typos_and_wrong_types(kind: str, file: str, break_it: Any) -> None:
    doc = copy.deepcopy(load(PROMETHEUS / file))
    break_it(doc)
    assert errors(kind, doc), "the schema accepted a broken resource"


def test_prometheus_rule_carries_exactly_the_rule_files() -> None:
    groups: list[Any] = []
    for path in sorted((PROMETHEUS / "rules").glob("*.yml")):
        groups.extend(load(path)["groups"])
    assert load(PROMETHEUS / "prometheusrule.yaml")["spec"]["groups"] == groups


def test_service_monitor_selects_the_service() -> None:
    spec = load(PROMETHEUS / "servicemonitor.yaml")["spec"]
    key, value = SERVICE_LABEL
    assert spec["selector"]["matchLabels"] == {key: value}
    assert spec["jobLabel"] == key  # job="model-api", which the rules select
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == SERVICE_PORT[0] and endpoint["path"] == "/metrics"
    services = [
        doc
        for path in sorted((ROOT / "deploy" / "k8s").glob("*.y*ml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "Service"
    ]
    [service] = services
    assert service["metadata"]["labels"][key] == value
    ports = {p.get("name"): p["port"] for p in service["spec"]["ports"]}
    assert ports[SERVICE_PORT[0]] == SERVICE_PORT[1]
