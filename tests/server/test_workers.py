"""`mserve serve --workers N`: several processes on one port, one /metrics view that adds them
up, admin changes reaching every worker at once, a worker that dies started again, and one
SIGTERM draining them all."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import mserve
from mserve.server.workers import merge
from tests.conftest import Server, new_bucket, wait_until

TOKEN = "test-admin-token-0123456789"
IRIS_1 = "/v2/models/iris/versions/1/infer"
ROW = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def workers_of(server: Server) -> list[int]:
    """The worker processes of a server started with --workers."""
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def socket_of(pid: int) -> Path:
    """A worker's own socket, from its command line (INDEX COUNT FOLDER ...)."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return Path(arguments[5].decode()) / f"worker-{arguments[3].decode()}.sock"


def own_metrics(pid: int) -> str:
    """One worker's own metrics, over its private socket (what its siblings read)."""
    transport = httpx.HTTPTransport(uds=str(socket_of(pid)))
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get("http://localhost/metrics").text


def requests_counted(text: str) -> float:
    """Inference requests to iris:1 that a server's metrics count."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mserve_requests_total"
        and sample.labels["model"] == "iris"
        and sample.labels["version"] == "1"
    )


@pytest.mark.slow
def test_workers_share_the_port_and_one_scrape_adds_them_up(repo3: Path) -> None:
    server = Server(repo3, "--workers", "2", "--version-policy", "all")
    try:
        assert wait_until(lambda: len(workers_of(server)) == 2)
        loaded(server)
        for _ in range(300):  # a connection each: the kernel hands them to either worker
            reply = httpx.post(f"{server.url}{IRIS_1}", json=ROW)
            assert reply.status_code == 200
        grpc = grpcclient.InferenceServerClient(server.grpc)  # the gRPC port is shared too
        try:
            tensor = grpcclient.InferInput("X", [1, 4], "FP32")
            tensor.set_data_from_numpy(np.array([ROW["inputs"][0]["data"]], np.float32))
            assert grpc.infer("iris", [tensor], model_version="1").as_numpy("label") is not None
        finally:
            grpc.close()
        own = [requests_counted(own_metrics(pid)) for pid in workers_of(server)]
        assert sum(own) == 301
        assert all(count > 0 for count in own), own  # both took connections
        for _ in range(5):  # whichever worker answers the scrape, it shows the whole server
            assert requests_counted(httpx.get(f"{server.url}/metrics").text) == 301
        memory = [
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"{server.url}/metrics").text.splitlines()
            if line.startswith("process_resident_memory_bytes ")
        ]
        assert len(memory) == 1  # one figure: both workers' memory
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_an_admin_change_reaches_every_worker_before_it_answers(repo3: Path) -> None:
    # polling once an hour: only the change itself can tell the other worker
    server = Server(
        repo3, "--workers", "2", "--poll-interval", "3600", env={"MSERVE_ADMIN_TOKEN": TOKEN}
    )
    try:
        assert wait_until(lambda: len(workers_of(server)) == 2)
        promoted = httpx.post(
            f"{server.url}/admin/models/iris/promote",
            json={"version": 2},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert promoted.status_code == 200, promoted.text
        answered = {
            httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW).headers[
                "mserve-model-version"
            ]
            for _ in range(100)
        }
        assert answered == {"2"}
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_a_worker_that_dies_is_started_again_and_sigterm_drains_them_all(repo3: Path) -> None:
    server = Server(repo3, "--workers", "2", "--version-policy", "all")
    try:
        assert wait_until(lambda: len(workers_of(server)) == 2)
        loaded(server)
        first, second = workers_of(server)
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: first not in workers_of(server) and len(workers_of(server)) == 2)
        (again,) = set(workers_of(server)) - {second}
        assert wait_until(lambda: answers(again))  # on its own socket: a killed one's is gone
        loaded(server)
        for _ in range(100):
            assert httpx.post(f"{server.url}{IRIS_1}", json=ROW).status_code == 200
        assert requests_counted(own_metrics(again)) > 0  # it takes connections again
        workers = workers_of(server)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert "exited (-9); starting it again" in server.stderr()
        for pid in workers:
            assert wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=5)
    finally:
        server.stop()


def loaded(server: Server) -> None:
    """Wait until every worker has loaded its models (and so takes connections): a worker's
    own socket listens from its start, and answers once it has loaded."""
    assert wait_until(lambda: all(answers(pid) for pid in workers_of(server)))
    for pid in workers_of(server):
        own_metrics(pid)


def answers(pid: int) -> bool:
    """Whether a worker listens on its own socket (it does once its models are loaded)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(socket_of(pid)))
        except OSError:
            return False
    return True


def test_merge_adds_counters_and_keeps_states() -> None:
    one = """\
# TYPE mserve_requests counter
mserve_requests_total{model="m",version="1",protocol="v2",outcome="ok"} 3.0
# TYPE mserve_queue_depth gauge
mserve_queue_depth{model="m",version="1"} 2.0
# TYPE mserve_model_version_state gauge
mserve_model_version_state{model="m",version="1",state="AVAILABLE"} 1.0
# TYPE mserve_repository_up gauge
mserve_repository_up 1.0
# TYPE mserve_batch_size histogram
mserve_batch_size_bucket{model="m",version="1",le="1.0"} 3.0
mserve_batch_size_bucket{model="m",version="1",le="+Inf"} 3.0
mserve_batch_size_count{model="m",version="1"} 3.0
mserve_batch_size_sum{model="m",version="1"} 3.0
"""
    other = one.replace("} 3.0", "} 4.0").replace("repository_up 1.0", "repository_up 0.0")
    merged = merge([one, other]).decode()
    assert 'mserve_requests_total{model="m",outcome="ok",protocol="v2",version="1"} 7.0' in (merged)
    assert 'mserve_queue_depth{model="m",version="1"} 4.0' in merged
    assert 'mserve_model_version_state{model="m",state="AVAILABLE",version="1"} 1.0' in merged
    assert "mserve_repository_up 0.0" in merged
    assert 'mserve_batch_size_bucket{le="+Inf",model="m",version="1"} 7.0' in merged
    assert 'mserve_batch_size_count{model="m",version="1"} 7.0' in merged


@pytest.mark.parametrize("count", ["0", "65"])
def test_a_worker_count_out_of_range_is_refused(repo3: Path, count: str) -> None:
    from mserve.cli.app import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["serve", str(repo3), "--workers", count])
    assert result.exit_code == 2
    assert "--workers is 1 to 64" in result.stderr


@pytest.mark.slow
def test_workers_on_an_object_store_keep_a_cache_each(
    s3_server: str, tmp_path: Path, iris_pipeline: Any, iris_data: Any
) -> None:
    location = f"s3://{new_bucket()}/models"
    mserve.export(iris_pipeline, name="iris", repo=location, sample=iris_data[0][:5])
    cache = tmp_path / "cache"
    server = Server(location, "--workers", "2", "--cache-dir", str(cache), log_dir=tmp_path)
    try:
        loaded(server)
        assert httpx.post(f"{server.url}{IRIS_1}", json=ROW).status_code == 200
        # a copy is never shared mid-write: each worker downloads into its own folder
        assert sorted(p.name for p in cache.iterdir()) == ["worker-0", "worker-1"]
        for folder in cache.iterdir():
            assert (folder / "iris" / "1" / "manifest.json").is_file()
    finally:
        assert server.stop() == 0
