"""Admission control without and with batching: slow requests run off the event loop, the
queue and the timeout hold in every mode, and a timed-out request frees its place at once.
The slow requests are real: tests/slow_model.py runs as many matrix products as asked."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, export_iris
from tests.slow_model import publish_slow

pytestmark = pytest.mark.slow
FOREVER = 10_000_000  # steps no request would wait for


@pytest.fixture(scope="module")
def slow_repo(tmp_path_factory: pytest.TempPathFactory, iris_data: Any) -> Path:
    repo = tmp_path_factory.mktemp("admission") / "models"
    publish_slow(repo)
    export_iris(repo, iris_data)
    return repo


def _slow(server: Server, steps: int, timeout: float = 60) -> httpx.Response:
    body = {"inputs": [{"name": "steps", "shape": [1], "datatype": "INT64", "data": [steps]}]}
    return httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=timeout)


IRIS = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


def test_a_slow_request_leaves_the_probes_and_other_models_answering(slow_repo: Path) -> None:
    server = Server(slow_repo)
    try:
        order: list[str] = []
        slow = threading.Thread(
            target=lambda: order.append(f"slow {_slow(server, 6000).status_code}")
        )
        slow.start()
        time.sleep(0.3)  # the slow request is running (it takes seconds)
        assert httpx.get(f"{server.url}/v2/health/live", timeout=30).status_code == 200
        order.append("live")
        # what an autoscaler reads: one request in flight, on a thread, none waiting
        gauges = [
            line
            for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines()
            if line.startswith(("mserve_requests_in_flight{", "mserve_queue_depth{"))
            and 'model="slow"' in line
        ]
        assert gauges == [
            'mserve_requests_in_flight{model="slow",version="1"} 1.0',
            'mserve_queue_depth{model="slow",version="1"} 0.0',
        ]
        iris = httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS, timeout=30)
        assert iris.status_code == 200
        order.append("iris")
        slow.join(60)
        assert order == ["live", "iris", "slow 200"]
    finally:
        assert server.stop() == 0


def test_without_batching_a_late_request_gets_504_and_its_run_is_stopped(
    slow_repo: Path,
) -> None:
    server = Server(slow_repo, "--timeout", "0.5", "--max-queue", "0")
    try:
        # Both worker threads would be busy for hours if timed-out runs went on.
        for _ in range(3):
            late = _slow(server, FOREVER)
            assert late.status_code == 504
            assert late.json() == {"error": "no answer within 0.5 s"}
        assert _slow(server, 1).status_code == 200
        depth = [
            line
            for line in httpx.get(f"{server.url}/metrics").text.splitlines()
            if line.startswith('mserve_queue_depth{model="slow"')
        ]
        assert depth == ['mserve_queue_depth{model="slow",version="1"} 0.0']
    finally:
        assert server.stop() == 0


def test_without_batching_a_full_queue_is_refused_before_the_body_is_read(
    slow_repo: Path,
) -> None:
    server = Server(slow_repo, "--max-queue", "0", "--timeout", "3")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(_slow, server, FOREVER) for _ in range(2)]  # both threads
            time.sleep(0.5)
            # Not decoded: a body that is not JSON still gets the queue's answer.
            refused = httpx.post(
                f"{server.url}/v2/models/slow/infer", content=b"{not json", timeout=10
            )
            assert refused.status_code == 503
            assert refused.json() == {"error": "the model's queue is full; retry later"}
            assert refused.headers["retry-after"] == "1"
            # Another model has its own threads.
            iris = httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS, timeout=10)
            assert iris.status_code == 200
            assert [f.result().status_code for f in busy] == [504, 504]
    finally:
        assert server.stop() == 0


def test_with_batching_a_batch_nobody_waits_for_is_stopped(slow_repo: Path) -> None:
    server = Server(slow_repo, "--max-batch-size", "4", "--max-queue", "1", "--timeout", "0.5")
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(_slow, server, FOREVER)  # the batch on the thread
            time.sleep(0.2)
            waiting = pool.submit(_slow, server, 1)  # queued behind it
            assert running.result().status_code == 504
            assert waiting.result().status_code in (200, 504)  # run once the batch stopped
        # The queue is free and the thread too: the timed-out batch did not go on.
        assert _slow(server, 1, timeout=10).status_code == 200
    finally:
        assert server.stop() == 0
