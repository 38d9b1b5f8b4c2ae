"""Derive the vendored custom resource schemas in this folder (run by hand, not by the tests).

Sources: the PyPI packages cloudcoil-models-prometheus-operator 0.80.1.0 and cloudcoil-models-keda
2.16.1.0, pydantic models generated from the CustomResourceDefinitions (openAPIV3Schema) of
prometheus-operator v0.80.1 and KEDA v2.16.1. The JSON schema of each model is written with two
changes that make it as strict as `kubectl apply --validate=strict`: unknown fields are refused
(additionalProperties: false), and optional fields may be absent but not null. Go's `^(?i)...`
patterns are written `(?i)^...`, the same regular expression in the form Python's re module accepts.

    pip install cloudcoil-models-prometheus-operator==0.80.1.0 cloudcoil-models-keda==2.16.1.0
    python tests/schemas/derive.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1

HERE = Path(__file__).resolve().parent
SOURCE = "cloudcoil-models-prometheus-operator==0.80.1.0 (prometheus-operator v0.80.1 CRDs)"
KEDA_SOURCE = "cloudcoil-models-keda==2.16.1.0 (KEDA v2.16.1 CRDs)"


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items() if k != "title"}
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [s for s in any_of if s != {"type": "null"}]
        node.pop("anyOf")
        node.pop("default", None)
        node.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        node["pattern"] = "(?i)^" + pattern[len("^(?i)") :]
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("additionalProperties", False)
    return node


def main() -> None:
    for model, name, source in [
        (v1.ServiceMonitor, "servicemonitor.monitoring.coreos.com.v1", SOURCE),
        (v1.PrometheusRule, "prometheusrule.monitoring.coreos.com.v1", SOURCE),
        (keda.ScaledObject, "scaledobject.keda.sh.v1alpha1", KEDA_SOURCE),
    ]:
        schema = strict(model.model_json_schema(by_alias=True))
        schema["$comment"] = f"Derived by tests/schemas/derive.py from {source}."
        (HERE / f"{name}.json").write_text(json.dumps(schema, indent=1) + "\n")


if __name__ == "__main__":
    main()
