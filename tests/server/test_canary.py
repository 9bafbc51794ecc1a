"""Canaries served: a weighted split that lands within a binomial tolerance, a sticky header that
always reaches the same version (on REST and gRPC), shadow copies whose agreement is counted,
every reply naming the version that answered, and `mserve canary watch` aborting a candidate
that fails, with the figures summed over several replicas."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mserve.cli.app import app
from typer.testing import CliRunner

import mserve
from mserve.lifecycle import Lifecycle
from mserve.repository import LocalRepository
from mserve.stores import open_repository
from tests.conftest import Server, new_bucket, wait_until

pytestmark = pytest.mark.slow

ACTOR = "tester"
TOKEN = "test-admin-token-0123456789"
ROW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
INFER = "/v2/models/adder/infer"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def _adder(folder: Path, name: str, shift: list[float], *, fails_on_one_row: bool = False) -> Path:
    """``y = x + shift``; with FAILS_ON_ONE_ROW, x goes through a reshape to rows of 3 first,
    which onnxruntime refuses for a batch of one (4 values) and accepts for three."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Add", ["z", "W"], ["y"])]
    initializers = [numpy_helper.from_array(np.array(shift, np.float32), "W")]
    if fails_on_one_row:
        nodes[:0] = [
            helper.make_node("Reshape", ["x", "threes"], ["r"]),
            helper.make_node("Reshape", ["r", "fours"], ["z"]),
        ]
        initializers += [
            numpy_helper.from_array(np.array([-1, 3], np.int64), "threes"),
            numpy_helper.from_array(np.array([-1, 4], np.int64), "fours"),
        ]
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["z"]))
    graph = helper.make_graph(
        nodes,
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def adders(tmp_path: Path) -> Path:
    """adder:1 (stable), 2 (within 1e-4 of it), 3 (0.5 off), 4 (fails on one row)."""
    repo = tmp_path / "models"
    sample = np.arange(12, dtype=np.float32).reshape(3, 4)
    for name, shift, fails in (
        ("one", [0, 0, 0, 0], False),
        ("near", [0, 0, 0, 1e-5], False),
        ("off", [0, 0, 0, 0.5], False),
        ("failing", [0, 0, 0, 0], True),
    ):
        source = _adder(tmp_path, name, shift, fails_on_one_row=fails)
        mserve.export(source, name="adder", repo=repo, sample=sample)
    Lifecycle(LocalRepository(repo)).promote("adder", 1, actor=ACTOR)
    return repo


def applies(server: Server, candidate: int | None) -> bool:
    from mserve.canary_report import canaries_in

    canary = canaries_in(httpx.get(f"{server.url}/metrics").text).get("adder")
    return (
        (canary is None) if candidate is None else (canary or {}).get("candidate") == str(candidate)
    )


def test_a_weighted_canary_lands_within_tolerance_and_a_sticky_header_holds(
    adders: Path,
) -> None:
    import tritonclient.grpc as grpcclient

    server = Server(adders)
    try:
        Lifecycle(LocalRepository(adders)).canary(
            "adder", 2, weight=10, header="x-user", actor=ACTOR
        )
        assert wait_until(lambda: applies(server, 2))
        answered: Counter[str] = Counter()
        with httpx.Client(base_url=server.url) as client:
            for _ in range(2000):
                reply = client.post(INFER, json=ROW)
                assert reply.status_code == 200
                # the reply names the version, in the body and in a header
                assert reply.json()["model_version"] == reply.headers["mserve-model-version"]
                answered[reply.headers["mserve-model-version"]] += 1
            # 10 % of 2,000: 200, sd 13.4; within 4.5 sd
            assert 140 <= answered["2"] <= 260, answered
            assert answered["1"] + answered["2"] == 2000

            # TF Serving's replies carry no version: the header names it
            tf = client.post("/v1/models/adder:predict", json={"instances": [[1, 2, 3, 4]]})
            assert tf.headers["mserve-model-version"] in ("1", "2")

            # a request naming a version is not part of the canary
            pinned = {
                client.post("/v2/models/adder/versions/1/infer", json=ROW).headers[
                    "mserve-model-version"
                ]
                for _ in range(100)
            }
            assert pinned == {"1"}

            # the same user always reaches the same version; users spread 90/10
            users: dict[str, str] = {}
            for i in range(600):
                user = f"user-{i}"
                versions = {
                    client.post(INFER, json=ROW, headers={"X-User": user}).headers[
                        "mserve-model-version"
                    ]
                    for _ in range(3)
                }
                assert len(versions) == 1, (user, versions)
                users[user] = versions.pop()
            candidates = sum(v == "2" for v in users.values())
            assert 30 <= candidates <= 95, candidates  # 10 % of 600: 60, sd 7.3

        # gRPC metadata is the same header: each user reaches the version REST gave it
        grpc = grpcclient.InferenceServerClient(server.grpc)
        try:
            for user in list(users)[:40]:
                tensor = grpcclient.InferInput("x", [1, 4], "FP32")
                tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
                result = grpc.infer("adder", [tensor], headers={"x-user": user})
                assert result.get_response().model_version == users[user]
        finally:
            grpc.close()
    finally:
        assert server.stop() == 0


def test_shadow_copies_are_compared_off_the_request_path(adders: Path) -> None:
    server = Server(adders, env={"MSERVE_ADMIN_TOKEN": TOKEN})
    runner = CliRunner()
    try:
        started = runner.invoke(
            app,
            ["canary", "start", "adder", "3", "--weight", "0", "--shadow", "--repo", str(adders)],
        )
        assert started.exit_code == 0, started.stderr
        assert wait_until(lambda: applies(server, 3))
        status = runner.invoke(
            app, ["status", "--server", server.url], env={"MSERVE_ADMIN_TOKEN": TOKEN}
        )
        canary = LocalRepository(adders).state("adder").canary
        assert canary is not None
        assert f"adder: canary {canary.id}: 0% of 'stable' to 3, shadowing 1" in " ".join(
            status.stdout.split()
        )
        assert "not applied" not in status.stdout
        with httpx.Client(base_url=server.url) as client:
            for _ in range(200):
                reply = client.post(INFER, json=ROW)
                # the baseline answers every request: weight 0
                assert reply.headers["mserve-model-version"] == "1"
                assert reply.json()["outputs"][0]["data"] == [1, 2, 3, 4]

        def shown() -> dict[str, Any]:
            result = runner.invoke(
                app, ["canary", "show", "adder", "--server", server.url, "--json"]
            )
            return dict(json.loads(result.stdout))

        assert wait_until(lambda: shown()["shadow"]["compared"] >= 190)
        report = shown()
        outcomes = report["shadow"]["outcomes"]
        assert outcomes.get("values_differ", 0) == report["shadow"]["compared"]
        assert outcomes.get("values_differ", 0) + outcomes.get("dropped", 0) == 200
        assert report["shadow"]["largest_abs_difference"] == pytest.approx(0.5)
        assert report["baseline"]["requests"] == 200
        assert report["candidate"]["requests"] == 0
        assert report["verdict"]["outcome"] == "fail"
        assert "shadow agreement 0.00%" in report["verdict"]["reasons"][0]
        failing = runner.invoke(app, ["canary", "show", "adder", "--server", server.url])
        assert failing.exit_code == 1
        assert "verdict: fail; shadow agreement 0.00% under 99.00%" in " ".join(
            failing.stdout.split()
        )

        # a candidate that agrees
        aborted = runner.invoke(app, ["canary", "abort", "adder", "--repo", str(adders)])
        assert aborted.exit_code == 0, aborted.stderr
        again = runner.invoke(
            app,
            ["canary", "start", "adder", "2", "--weight", "0", "--shadow", "--repo", str(adders)],
        )
        assert again.exit_code == 0, again.stderr
        assert wait_until(lambda: applies(server, 2))
        with httpx.Client(base_url=server.url) as client:
            for _ in range(150):
                client.post(INFER, json=ROW)
        assert wait_until(lambda: shown()["shadow"]["compared"] >= 140)
        report = shown()
        assert report["shadow"]["outcomes"].get("agree") == report["shadow"]["compared"]
        assert 0 < report["shadow"]["largest_abs_difference"] <= 1e-4
        assert report["verdict"]["outcome"] == "pass"

        # watch needs somewhere to make its change, known before it starts
        watch = ["canary", "watch", "adder", "--server", server.url, "--for", "1"]
        refused = runner.invoke(app, watch, env={"MSERVE_ADMIN_TOKEN": ""})
        assert refused.exit_code == 2
        assert "give --repo, or the admin token" in refused.stderr
        # a candidate that held is promoted at the end
        held = runner.invoke(
            app, [*watch, "--every", "0.5", "--repo", str(adders), "--promote", "--json"]
        )
        assert held.exit_code == 0, held.stdout + held.stderr
        outcome = json.loads(held.stdout)
        assert outcome["verdict"]["outcome"] == "pass"
        assert outcome["change"]["change"]["operation"] == "promote"
        state = LocalRepository(adders).state("adder")
        assert (state.labels["stable"], state.canary) == (2, None)
    finally:
        assert server.stop() == 0


def test_watch_aborts_a_failing_candidate_judged_over_every_replica(adders: Path) -> None:
    replicas = [Server(adders) for _ in range(3)]
    runner = CliRunner()
    servers = [arg for server in replicas for arg in ("--server", server.url)]
    stop = threading.Event()

    def traffic() -> None:
        clients = [httpx.Client(base_url=server.url) for server in replicas]
        deadline = time.monotonic() + 60
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                for client in clients:
                    client.post(INFER, json=ROW)
        finally:
            for client in clients:
                client.close()

    load = threading.Thread(target=traffic)
    try:
        started = runner.invoke(
            app,
            [
                "canary",
                "start",
                "adder",
                "4",
                "--weight",
                "30",
                "--repo",
                str(adders),
                "--wait",
                *servers,
            ],
        )
        assert started.exit_code == 0, started.stdout + started.stderr
        assert started.stdout.count("served after") == 3  # every replica applies it
        # a failed reply names the version that failed on it, too
        failed = httpx.post(f"{replicas[0].url}/v2/models/adder/versions/4/infer", json=ROW)
        assert failed.status_code == 400
        assert failed.headers["mserve-model-version"] == "4"
        load.start()
        watched = runner.invoke(
            app,
            [
                "canary",
                "watch",
                "adder",
                *servers,
                "--repo",
                str(adders),
                "--for",
                "45",
                "--every",
                "0.5",
                "--min-requests",
                "30",
            ],
        )
        assert watched.exit_code == 1, watched.stdout + watched.stderr
        assert "worse than the baseline: aborted" in watched.stderr
        state = LocalRepository(adders).state("adder")
        assert state.canary is None
        assert state.labels["stable"] == 1
        last = state.history[-1]
        assert last["operation"] == "abort"
        assert last["detail"].startswith("mserve canary watch: error rate 100.00%")
        assert all(wait_until(lambda s=s: applies(s, None)) for s in replicas)
        stop.set()
        load.join()
        # the candidate's requests were spread over the replicas, and all of them counted
        with httpx.Client() as client:
            counted = [
                sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in client.get(f"{s.url}/metrics").text.splitlines()
                    if line.startswith('mserve_requests_total{model="adder",outcome="400"')
                    and 'version="4"' in line
                )
                for s in replicas
            ]
        assert all(count > 0 for count in counted), counted
    finally:
        stop.set()
        if load.is_alive():
            load.join()
        for server in replicas:
            assert server.stop() == 0


def test_replicas_on_s3_fetch_a_canary_candidate_and_split_alike(
    s3_server: str, tmp_path: Path, iris_pipeline: Any, iris_data: Any
) -> None:
    location = f"s3://{new_bucket()}/models"
    for _ in range(3):
        mserve.export(iris_pipeline, name="iris", repo=location, sample=iris_data[0][:5])
    Lifecycle(open_repository(location)).promote("iris", 1, actor=ACTOR)
    # latest:1 serves 3 and the label's 1; the candidate, 2, is fetched for the canary
    replicas = [
        Server(location, "--cache-dir", str(tmp_path / f"cache-{n}"), log_dir=tmp_path)
        for n in range(2)
    ]
    runner = CliRunner()
    try:
        urls = [arg for replica in replicas for arg in ("--server", replica.url)]
        started = runner.invoke(
            app,
            [
                "canary",
                "start",
                "iris",
                "2",
                "--weight",
                "50",
                "--header",
                "x-user",
                "--repo",
                location,
                "--wait",
                *urls,
            ],
        )
        assert started.exit_code == 0, started.stdout + started.stderr
        body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}
        for user in ("ann", "bob", "cy", "dee", "eve", "fay"):
            answered = {
                httpx.post(
                    f"{replica.url}/v2/models/iris/infer", json=body, headers={"x-user": user}
                ).headers["mserve-model-version"]
                for replica in replicas
                for _ in range(3)
            }
            assert len(answered) == 1 and answered <= {"1", "2"}, (user, answered)
    finally:
        for replica in replicas:
            assert replica.stop() == 0


def test_a_canary_through_a_servers_admin_api_is_the_same_repository_write(
    adders: Path,
) -> None:
    server = Server(adders, env={"MSERVE_ADMIN_TOKEN": TOKEN})
    runner = CliRunner()
    env = {"MSERVE_ADMIN_TOKEN": TOKEN}
    try:
        where = ["--server", server.url, "--wait"]
        started = runner.invoke(
            app, ["canary", "start", "adder", "2", "--weight", "20", *where], env=env
        )
        assert started.exit_code == 0, started.stdout + started.stderr
        assert "canary adder: 20% of 'stable' to 2 (baseline 1)" in started.stdout
        state = LocalRepository(adders).state("adder")
        assert state.canary is not None and state.history[-1]["via"].startswith("admin API")
        assert applies(server, 2)  # answered once this server applies it
        refused = httpx.post(
            f"{server.url}/admin/models/adder/canary",
            json={"version": 3, "weight": "lots"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert refused.status_code == 400
        assert refused.json() == {"error": "field 'weight' must be a number"}
        running = httpx.post(
            f"{server.url}/admin/models/adder/canary",
            json={"version": 3},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert running.status_code == 409
        aborted = runner.invoke(
            app, ["canary", "abort", "adder", "--reason", "by hand", *where], env=env
        )
        assert aborted.exit_code == 0, aborted.stdout + aborted.stderr
        assert applies(server, None)
        assert LocalRepository(adders).state("adder").history[-1]["detail"] == "by hand"
    finally:
        assert server.stop() == 0
