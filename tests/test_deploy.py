"""The deployment kit, checked offline: the Dockerfile passes hadolint and its entrypoint runs as
a local process; every Kubernetes manifest validates strictly; the container command lines of
the Deployment and of the KServe serving runtime run as real servers whose probes answer as the
manifests expect."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import free_port, wait_until
from tests.kustomize import kubectl_render, render

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
OVERLAYS = sorted(p for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.30.0"
ROW = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def tool(name: str) -> str:
    """A tool the test extra installs into the environment's bin folder."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


# -- the image -------------------------------------------------------------------------------


def dockerfile() -> dict[str, Any]:
    """The Dockerfile's final stage: its ENV, ENTRYPOINT and HEALTHCHECK command."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages = text.split("\nFROM ")
    final = stages[-1]
    env: dict[str, str] = {}
    found: dict[str, Any] = {"env": env}
    for line in final.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction == "ENTRYPOINT":
            found["entrypoint"] = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            found["healthcheck"] = json.loads(rest.split(" CMD ", 1)[1])
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_images_entrypoint_serves_and_its_health_check_passes(repo3: Path) -> None:
    image = dockerfile()
    assert image["entrypoint"] == ["mserve", "serve"]
    env = {**os.environ, **{k: v for k, v in image["env"].items() if k not in ("PATH", "HOME")}}
    assert (env["MSERVE_HOST"], env["MSERVE_NO_ADMIN"], env["MSERVE_REPO"]) == (
        "0.0.0.0",
        "1",
        "/models",
    )
    # here: loopback, free ports, and the repository where /models would be mounted
    env.update(MSERVE_HOST="127.0.0.1", MSERVE_REPO=str(repo3))
    env.update(MSERVE_PORT=str(free_port()), MSERVE_GRPC_PORT=str(free_port()))
    command = [sys.executable, "-m", "mserve", *image["entrypoint"][1:]]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        check = image["healthcheck"]
        assert check[0] == "python"

        def healthy() -> bool:
            return (
                subprocess.run(
                    [sys.executable, *check[1:]], env=env, capture_output=True
                ).returncode
                == 0
            )

        assert wait_until(healthy, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)  # what the container engine sends to PID 1
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    assert err.decode().strip() == ""  # JSON logs: all on stdout
    assert all(json.loads(line) for line in out.decode().splitlines())


# -- Kubernetes --------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def test_every_overlay_renders_as_kubectl_kustomize_does() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the overlays are rendered by tests/kustomize.py")
    for overlay in OVERLAYS:
        assert kubectl_render(overlay) == sorted_like(render(overlay), kubectl_render(overlay))


def sorted_like(ours: list[dict[str, Any]], theirs: list[dict[str, Any]] | None) -> list[Any]:
    """OURS in kubectl's order (it sorts by kind)."""
    order = [(r["kind"], r["metadata"]["name"]) for r in theirs or []]
    return sorted(ours, key=lambda r: order.index((r["kind"], r["metadata"]["name"])))


def test_every_rendered_manifest_validates_strictly(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(r["kind"] for r in rendered)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def deployment(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [r for r in rendered if r["kind"] == "Deployment"]
    return found


def test_the_deployment_is_safe_and_drains_within_its_grace(
    rendered: list[dict[str, Any]],
) -> None:
    pod = deployment(rendered)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # the only write
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"] if "=" in arg)
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = pre_stop + float(args["drain-pause"]) + float(args["shutdown-grace"])
    assert pod["terminationGracePeriodSeconds"] > drain
    services = {r["metadata"]["name"]: r for r in rendered if r["kind"] == "Service"}
    assert services["mserve-replicas"]["spec"]["clusterIP"] == "None"  # for --wait --server
    assert {p["name"] for p in services["mserve"]["spec"]["ports"]} == {"http", "grpc"}


@pytest.mark.slow
def test_the_deployments_command_line_serves_and_its_probes_answer(
    rendered: list[dict[str, Any]], repo3: Path, tmp_path: Path
) -> None:
    (container,) = deployment(rendered)["spec"]["template"]["spec"]["containers"]
    port, grpc_port = free_port(), free_port()
    named = {"http": port, "grpc": grpc_port}
    args = [
        {"--host=0.0.0.0": "--host=127.0.0.1"}.get(arg, arg)
        .replace("--port=8000", f"--port={port}")
        .replace("--grpc-port=8001", f"--grpc-port={grpc_port}")
        for arg in container["args"]
    ]
    env = {**os.environ, "MSERVE_CACHE_DIR": str(tmp_path / "cache")}
    for variable in container["env"]:
        env[variable["name"]] = variable["value"]
    if env["MSERVE_REPO"] == "/models":
        env["MSERVE_REPO"] = str(repo3)  # where the volume would be mounted
    else:  # the object store's: served here from a folder all the same
        assert env["MSERVE_REPO"].startswith("s3://")
        assert container["envFrom"] == [{"secretRef": {"name": "mserve-s3"}}]
        env["MSERVE_REPO"] = str(repo3)
    process = subprocess.Popen(
        [sys.executable, "-m", "mserve", "serve", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            url = f"http://127.0.0.1:{named[get['port']]}{get['path']}"

            def answers(url: str = url) -> bool:
                try:
                    return httpx.get(url, timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            assert wait_until(answers, timeout=60), probe
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()


# -- KServe -----------------------------------------------------------------------------------

# The fields of KServe's ServingRuntimeSpec this kit sets (serving.kserve.io/v1alpha1), and
# their types as KServe's CRD declares them.
RUNTIME_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"enum": ["ServingRuntime", "ClusterServingRuntime"]},
        "spec": {
            "type": "object",
            "required": ["supportedModelFormats", "containers"],
            "additionalProperties": False,
            "properties": {
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "supportedModelFormats": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "autoSelect": {"type": "boolean"},
                            "priority": {"type": "integer", "minimum": 1},
                        },
                    },
                },
                "protocolVersions": {
                    "type": "array",
                    "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
                },
                "containers": {"type": "array", "minItems": 1},
            },
        },
    },
}
SERVICE_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "model": {
                            "type": "object",
                            "required": ["modelFormat", "storageUri"],
                            "properties": {
                                "modelFormat": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                },
                                "runtime": {"type": "string"},
                                "storageUri": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    },
}


def kserve(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((KSERVE / name).read_text())
    return loaded


def test_the_serving_runtime_and_its_example_validate() -> None:
    runtime, service = kserve("serving-runtime.yaml"), kserve("inference-service.yaml")
    jsonschema.validate(runtime, RUNTIME_SCHEMA)
    jsonschema.validate(service, SERVICE_SCHEMA)
    # its containers are core containers: validated as a pod's
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runtime-check"},
        "spec": {"containers": runtime["spec"]["containers"]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    assert model["modelFormat"]["name"] in formats


@pytest.mark.slow
def test_the_serving_runtime_serves_a_model_as_kserve_mounts_it(
    repo3: Path, tmp_path: Path
) -> None:
    (container,) = kserve("serving-runtime.yaml")["spec"]["containers"]
    mounted = tmp_path / "mnt" / "models"  # what KServe's storage initializer leaves
    shutil.copytree(repo3 / "iris", mounted)
    port, grpc_port = free_port(), free_port()
    args = [
        arg.replace("{{.Name}}", "iris-classifier")
        .replace("/mnt/models", str(mounted))
        .replace("--host=0.0.0.0", "--host=127.0.0.1")
        .replace("--port=8080", f"--port={port}")
        .replace("--grpc-port=8081", f"--grpc-port={grpc_port}")
        for arg in container["args"]
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "mserve", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        probe = container["readinessProbe"]["httpGet"]
        assert probe["port"] == 8080

        def ready() -> bool:
            try:
                return httpx.get(f"{url}{probe['path']}", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, timeout=60)
        # KServe's V2 routes, under the InferenceService's name; latest:1 serves iris:3
        assert httpx.get(f"{url}/v2/models/iris-classifier/ready").status_code == 200
        three = {**ROW, "inputs": [{**ROW["inputs"][0], "shape": [1, 3], "data": [5.1, 3.5, 1.4]}]}
        reply = httpx.post(f"{url}/v2/models/iris-classifier/infer", json=three)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_version"] == "3"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
