"""Check KServe manifests strictly against the kserve SDK's models: unknown fields and wrong types fail.

Run with the kserve SDK installed (`make install` puts it in .venv-kserve; it cannot share the
service's venv):

    .venv-kserve/bin/python tests/deploy/kserve_schema.py deploy/kserve/*.yaml

Each field is looked up in the model's `attribute_map` and checked against its `openapi_types`,
down through the nested KServe and Kubernetes models. Exit code 1 when anything is wrong.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import kserve.models
import kubernetes.client.models
import yaml

KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "InferenceGraph"): "V1alpha1InferenceGraph",
}
# kserve's models write list[X] and dict(K, V); the kubernetes client's, List[X] and Dict[K, V].
_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\])$")


def model_class(name: str) -> Any:
    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    return None


def check(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    """Append to `errors` every way `value` breaks the SDK type `type_name`."""
    if value is None:
        return
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list ({type_name})")
            return
        for i, item in enumerate(value):
            check(item, match[1], f"{path}[{i}]", errors)
        return
    if match := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping ({type_name})")
            return
        key_type, value_type = (match[1], match[2]) if match[1] else (match[3], match[4])
        for key, item in value.items():
            check(key, key_type, f"{path}.{key}(key)", errors)
            check(item, value_type, f"{path}.{key}", errors)
        return
    simple = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "object": lambda v: True,
        "datetime": lambda v: isinstance(v, str),
        "date": lambda v: isinstance(v, str),
        "ResourceQuantity": lambda v: isinstance(v, str | int | float) and not isinstance(v, bool),
        # KServe's autoscaling targets: a resource.Quantity in Go, a type name without a model here.
        "V1beta1MetricQuantity": lambda v: isinstance(v, str | int | float) and not isinstance(v, bool),
    }
    if type_name in simple:
        if not simple[type_name](value):
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__}")
        return
    cls = model_class(type_name)
    if cls is None:
        errors.append(f"{path}: the SDK has no model {type_name}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name})")
        return
    by_json_name = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        attr = by_json_name.get(key)
        if attr is None:
            errors.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        check(item, cls.openapi_types[attr], f"{path}.{key}", errors)


def check_document(doc: Any, where: str) -> list[str]:
    if not isinstance(doc, dict):
        return [f"{where}: not a mapping"]
    kind = (doc.get("apiVersion"), doc.get("kind"))
    model = KINDS.get(kind)
    if model is None:
        return [f"{where}: {kind[1]} ({kind[0]}) is not a KServe kind this checker knows"]
    errors: list[str] = []
    check(doc, model, f"{where}:{kind[1]}", errors)
    return errors


def main(paths: list[str]) -> int:
    failed = False
    for name in paths:
        for i, doc in enumerate(yaml.safe_load_all(Path(name).read_text())):
            if doc is None:
                continue
            errors = check_document(doc, f"{name}#{i}")
            failed = failed or bool(errors)
            for error in errors:
                print(f"FAIL {error}")
            if not errors:
                print(f"ok   {name}#{i} {doc['kind']}/{doc.get('metadata', {}).get('name')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
