"""Faults stay local: a version that cannot load, or a model whose files cannot be read, is
reported for what it is and never stops polling, start-up or the listing of the others; and
no reply tells a client anything about the host."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from mserve.runtime import ModelRunner
from mserve.server.grpc import OK, SERVICE, InferenceService
from mserve.server.settings import VersionPolicy

from ..conftest import Cli, Server
from .conftest import InProcess

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = [5.1, 3.5, 1.4, 0.2]


def add_version(repo: Path, number: int, change: Callable[[Path], None]) -> Path:
    """iris:NUMBER, a copy of iris:1 changed by CHANGE, with a manifest that matches it."""
    version = repo / "iris" / str(number)
    shutil.copytree(repo / "iris" / "1", version)
    change(version)
    if change is manifest_not_json:
        return version
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["version"] = number
    model = version / "model.onnx"
    if model.is_file():
        manifest["files"]["model.onnx"] = hashlib.sha256(model.read_bytes()).hexdigest()
    (version / "manifest.json").write_text(json.dumps(manifest))
    return version


def not_onnx(version: Path) -> None:
    (version / "model.onnx").write_bytes(b"this is not an ONNX model")


def nul_in_external_data(version: Path) -> None:
    model = onnx.load(str(version / "model.onnx"))
    tensor = onnx.helper.make_tensor("unused", onnx.TensorProto.FLOAT, [1], [0.0])
    model.graph.initializer.append(tensor)
    tensor = model.graph.initializer[-1]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights\x00.bin"
    onnx.save(model, str(version / "model.onnx"))


def no_model_file(version: Path) -> None:
    (version / "model.onnx").unlink()


def manifest_not_json(version: Path) -> None:
    (version / "manifest.json").write_text("{not json")


@pytest.fixture
def repo_copy(tmp_path: Path, served_repo: Path) -> Path:
    repo = tmp_path / "models"
    shutil.copytree(served_repo, repo)
    return repo


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (not_onnx, "model 'iris' version 2: model.onnx is not a valid ONNX model"),
        (nul_in_external_data, "model 'iris' version 2: "),
    ],
)
def test_a_version_that_cannot_load_is_marked_failed_and_the_others_serve(
    repo_copy: Path, breakage: Callable[[Path], None], reason: str
) -> None:
    add_version(repo_copy, 2, breakage)
    served = InProcess(repo_copy, admin_token=TOKEN)
    status = served.request("GET", "/v1/models/iris").json()["model_version_status"]
    failed = next(s for s in status if s["version"] == "2")
    assert failed["state"] == "END" and failed["status"]["error_message"].startswith(reason)
    infer = served.request("POST", "/v1/models/iris:predict", json={"instances": [ROW]})
    assert infer.status_code == 200  # the version before the broken one keeps serving
    churn = served.request("GET", "/v2/models/churn/ready")
    assert churn.status_code == 200
    admin = served.request("GET", "/admin/models/iris", headers=AUTH).json()
    row = next(v for v in admin["versions"] if v["version"] == 2)
    assert row["state"] == "END" and row["error"] == failed["status"]["error_message"]


@pytest.mark.parametrize(("breakage", "traceback"), [(not_onnx, False), (manifest_not_json, False)])
def test_a_failed_load_logs_one_line_and_counts_once_however_often_it_is_polled(
    repo_copy: Path,
    caplog: pytest.LogCaptureFixture,
    breakage: Callable[[Path], None],
    traceback: bool,
) -> None:
    add_version(repo_copy, 2, breakage)
    with caplog.at_level(logging.INFO, logger="mserve.server"):
        served = InProcess(repo_copy)
        for _ in range(3):
            served.server.plane.manager.refresh()
    lines = [r for r in caplog.records if "iris:2" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert (lines[0].exc_info is not None) == traceback
    metrics = served.request("GET", "/metrics").text
    assert 'mserve_model_loads_total{model="iris",outcome="failed",version="2"} 1.0' in metrics
    assert 'mserve_model_loads_total{model="iris",outcome="loaded",version="1"} 1.0' in metrics


def test_an_unexpected_load_error_logs_its_traceback_once(
    repo_copy: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in mserve or onnxruntime cannot be made with files; this stands in for one.
    def bug(verified: Any, threads: int = 0) -> Any:
        raise RuntimeError(f"something broke near {repo_copy}")

    monkeypatch.setattr(ModelRunner, "open_verified", bug)
    with caplog.at_level(logging.INFO, logger="mserve.server"):
        served = InProcess(repo_copy)
        for _ in range(3):
            served.server.plane.manager.refresh()
    lines = [r for r in caplog.records if "iris:1" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is not None, [r.getMessage() for r in lines]
    status = served.request("GET", "/v1/models/iris").json()["model_version_status"]
    message = status[0]["status"]["error_message"]
    assert message.startswith("model 'iris' version 1: ") and str(repo_copy) not in message
    assert "RuntimeError" not in message


def test_a_model_json_that_cannot_be_read_hides_no_other_model(repo_copy: Path) -> None:
    shutil.copytree(repo_copy / "iris", repo_copy / "broken")
    (repo_copy / "broken" / "model.json").unlink(missing_ok=True)
    (repo_copy / "broken" / "model.json").mkdir()  # unreadable as a file, even for root

    listed = Cli(repo_copy)("list", "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["iris"]["versions"] == [1] and rows["churn"]["versions"] == [1]
    assert "model.json" in rows["broken"]["problem"] and rows["iris"]["problem"] == ""
    table = Cli(repo_copy)("list")
    assert table.exit_code == 0 and "broken" in table.stdout and "iris" in table.stdout

    served = InProcess(repo_copy, admin_token=TOKEN)
    reply = served.request("GET", "/admin/models", headers=AUTH)
    assert reply.status_code == 200, reply.text
    models = {m["name"]: m for m in reply.json()["models"]}
    assert models["iris"]["ready"] and models["churn"]["ready"] and models["iris"]["error"] == ""
    assert "model.json" in models["broken"]["error"] and not models["broken"]["ready"]
    one = served.request("GET", "/admin/models/broken", headers=AUTH)
    assert one.status_code == 200 and "model.json" in one.json()["error"]
    status = served.request("GET", "/v1/models/broken").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("1", "END")]
    assert status[0]["status"]["error_message"].startswith("model 'broken': model.json")


def test_a_model_json_broken_while_serving_keeps_the_model_and_logs_once(
    repo_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served = InProcess(repo_copy)
    (repo_copy / "churn" / "model.json").unlink(missing_ok=True)
    (repo_copy / "churn" / "model.json").write_text("{not json")
    with caplog.at_level(logging.INFO, logger="mserve.server"):
        for _ in range(3):
            served.server.plane.manager.refresh()
    assert served.request("GET", "/v2/models/churn/ready").status_code == 200  # as it was
    assert served.request("GET", "/v2/models/iris/ready").status_code == 200
    lines = [r.getMessage() for r in caplog.records if "churn" in r.getMessage()]
    assert len(lines) == 1 and "model.json" in lines[0], lines


# -- clients learn nothing about the host -----------------------------------------------------

CLASS_NAMES = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException) and name != "Exception"
} | {"DecodeError", "JSONDecodeError", "Fail", "InvalidArgument", "InvalidProtobuf", "NoSuchFile"}


def host_details(text: str, repo: Path) -> list[str]:
    found = [str(p) for p in {repo, repo.resolve(), repo.parent} if str(p) in text]
    words = set(re.findall(r"[A-Za-z_]\w*", text))
    return found + sorted(CLASS_NAMES & words)


@pytest.fixture
def failing_repo(repo_copy: Path) -> Path:
    """iris:1 good; iris:2..5 each broken in its own way; 'broken' has a model.json folder."""
    add_version(repo_copy, 2, not_onnx)
    add_version(repo_copy, 3, no_model_file)
    add_version(repo_copy, 4, manifest_not_json)
    add_version(repo_copy, 5, nul_in_external_data)
    shutil.copytree(repo_copy / "iris" / "1", repo_copy / "broken" / "1")
    (repo_copy / "broken" / "model.json").mkdir()
    return repo_copy


def await_outcome(outcome: Any) -> Any:
    return asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome


def test_no_reply_carries_a_host_path_or_an_exception_class(failing_repo: Path) -> None:
    served = InProcess(failing_repo, admin_token=TOKEN, version_policy=VersionPolicy(None))
    replies: dict[str, str] = {}
    for path in (
        "/v1/models/iris",
        "/v1/models/broken",
        "/v2/models",
        "/admin/models",
        "/admin/models/iris",
        "/admin/models/broken",
        "/admin/models/nosuchmodel",
        *(f"/v1/models/iris/versions/{v}" for v in range(1, 6)),
        *(f"/v1/models/iris/versions/{v}/metadata" for v in range(2, 6)),
        *(f"/v2/models/iris/versions/{v}" for v in range(2, 6)),
        *(f"/v2/models/iris/versions/{v}/ready" for v in range(2, 6)),
    ):
        reply = served.request("GET", path, headers=AUTH)
        assert reply.status_code != 500, (path, reply.text)
        replies[path] = reply.text
    for model, operation, version in (
        ("iris", "promote", 2),
        ("iris", "promote", 5),
        ("iris", "retire", 3),
        ("nosuchmodel", "promote", 1),
        ("nosuchmodel", "retire", 1),
    ):
        path = f"/admin/models/{model}/{operation}"
        reply = served.request("POST", path, headers=AUTH, json={"version": version})
        assert reply.status_code != 500, (path, reply.text)
        replies[f"{path} {version}"] = reply.text
    statuses = json.loads(replies["/v1/models/iris"])["model_version_status"]
    errors = {s["version"]: s["status"]["error_message"] for s in statuses}
    assert set(errors) == {"1", "2", "3", "4", "5"} and errors["1"] == ""
    assert all(errors[v].startswith(f"model 'iris' version {v}: ") for v in "2345"), errors

    service = InferenceService(served.server.plane, served.server.admin, {})
    for version in ("2", "3", "4", "5"):
        for method, kind in (
            ("ModelMetadata", service_pb2.ModelMetadataRequest),
            ("ModelReady", service_pb2.ModelReadyRequest),
        ):
            outcome: Any = service.call(
                SERVICE + method, kind(name="iris", version=version).SerializeToString(), {}
            )
            text = outcome.message + outcome.payload.decode("latin-1")
            assert outcome.code == OK or outcome.message, method
            replies[f"gRPC {method} {version}"] = text
    index: Any = service.call(
        SERVICE + "RepositoryIndex",
        service_pb2.RepositoryIndexRequest().SerializeToString(),
        {"authorization": f"Bearer {TOKEN}"},
    )
    replies["gRPC RepositoryIndex"] = index.message + index.payload.decode("latin-1")
    load: Any = service.call(
        SERVICE + "RepositoryModelLoad",
        service_pb2.RepositoryModelLoadRequest(model_name="nosuchmodel").SerializeToString(),
        {"authorization": f"Bearer {TOKEN}"},
    )
    replies["gRPC RepositoryModelLoad"] = (await_outcome(load)).message
    leaks = {where: host_details(text, failing_repo) for where, text in replies.items()}
    assert not {where: found for where, found in leaks.items() if found}, replies


# -- start-up: live at once, ready when loaded, whatever fails -------------------------------


@pytest.mark.slow
def test_a_bad_version_does_not_stop_a_start_and_the_good_ones_serve(repo_copy: Path) -> None:
    add_version(repo_copy, 2, not_onnx)
    add_version(repo_copy, 3, nul_in_external_data)
    server = Server(repo_copy, "--version-policy", "all")  # fails unless it becomes ready
    try:
        infer = httpx.post(
            f"{server.url}/v1/models/iris/versions/1:predict", json={"instances": [ROW]}
        )
        assert infer.status_code == 200
        status = httpx.get(f"{server.url}/v1/models/iris").json()["model_version_status"]
        assert [s["state"] for s in status] == ["AVAILABLE", "END", "END"]
    finally:
        assert server.stop() == 0
    assert server.stderr().count("cannot load iris:2") == 1
    assert server.stderr().count("cannot load iris:3") == 1


@pytest.mark.slow
def test_liveness_answers_while_models_load_and_readiness_waits_for_them(
    repo_copy: Path,
) -> None:
    # Many versions, all served: loading them takes a noticeable while at start-up.
    for number in range(2, 61):
        add_version(repo_copy, number, lambda version: None)
    server = Server(repo_copy, "--version-policy", "all", wait=False)
    seen: list[tuple[int, int, list[str]]] = []  # live, ready, iris's version states
    grpc_answers = None
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline and server.process.poll() is None:
                try:
                    live = client.get(f"{server.url}/v2/health/live").status_code
                    ready = client.get(f"{server.url}/v2/health/ready").status_code
                    states = client.get(f"{server.url}/v1/models/iris").json()
                except httpx.TransportError:
                    time.sleep(0.01)
                    continue
                versions = states.get("model_version_status", [])
                seen.append((live, ready, [s["state"] for s in versions]))
                if ready == 200:
                    break
                if live == 200 and grpc_answers is None:  # gRPC too, while loading
                    grpc = grpcclient.InferenceServerClient(server.grpc)
                    grpc_answers = (grpc.is_server_live(), grpc.is_server_ready())
                    grpc.close()
        loading = [states for live, ready, states in seen if live == 200 and ready == 503]
        assert loading, f"never live before ready: {seen[:3]}"
        assert any("START" in s or "LOADING" in s for s in loading), loading[:3]
        assert seen[-1][:2] == (200, 200) and set(seen[-1][2]) == {"AVAILABLE"}
        assert len(seen[-1][2]) == 60
        assert grpc_answers is not None and grpc_answers[0] is True  # ready may have come since
    finally:
        assert server.stop() == 0
