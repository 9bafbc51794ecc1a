"""What only a running server shows: new versions picked up, labels followed, broken versions
isolated, swaps and shutdown without a failed request, batching and admission limits."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mserve.repository import LocalRepository

from ..conftest import Server, export_iris, wait_until

pytestmark = pytest.mark.slow

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


@pytest.fixture
def repo_copy(tmp_path: Path, served_repo: Path) -> Path:
    repo = tmp_path / "models"
    shutil.copytree(served_repo, repo)
    return repo


def served_version(server: Server, model: str = "iris") -> str:
    return str(
        httpx.post(f"{server.url}/v2/models/{model}/infer", json=BODY).json()["model_version"]
    )


def test_new_versions_are_picked_up_and_old_ones_unloaded(repo_copy: Path, iris_data: Any) -> None:
    server = Server(repo_copy)
    try:
        assert served_version(server) == "1"
        assert export_iris(repo_copy, iris_data) == 2
        assert wait_until(lambda: served_version(server) == "2")
        assert wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/iris/versions/1").status_code == 404
        )
        status = httpx.get(f"{server.url}/v1/models/iris").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2"]
    finally:
        assert server.stop() == 0


def test_labels_route_requests_and_keep_their_versions_served(
    repo_copy: Path, iris_data: Any
) -> None:
    export_iris(repo_copy, iris_data)
    server = Server(repo_copy)
    try:
        assert served_version(server) == "2"
        LocalRepository(repo_copy).update_state(
            "iris", lambda s: s.labels.update(stable=1, canary=2)
        )
        assert wait_until(lambda: served_version(server) == "1")  # no version: stable
        canary = httpx.post(
            f"{server.url}/v1/models/iris/labels/canary:predict", json={"instances": [ROW]}
        )
        assert canary.status_code == 200
        statuses = httpx.get(f"{server.url}/v1/models/iris/labels/stable").json()
        assert statuses["model_version_status"][0]["version"] == "1"
        assert httpx.get(f"{server.url}/v2/models/iris/versions/1/ready").status_code == 200
    finally:
        assert server.stop() == 0


def test_a_broken_version_is_reported_and_disturbs_nothing(repo_copy: Path, iris_data: Any) -> None:
    server = Server(repo_copy)
    try:
        staging = repo_copy.parent / "staging"
        version = export_iris(staging, iris_data)
        broken = staging / "iris" / str(version)
        (broken / "model.onnx").write_bytes(b"corrupted")  # its manifest hash no longer matches
        shutil.move(str(broken), repo_copy / "iris" / "2")
        manifest = repo_copy / "iris" / "2" / "manifest.json"
        manifest.write_text(manifest.read_text().replace(f'"version": {version}', '"version": 2'))

        def reported() -> bool:
            status = httpx.get(f"{server.url}/v1/models/iris").json()["model_version_status"]
            return any(s["version"] == "2" and s["state"] == "END" for s in status)

        assert wait_until(reported)
        status = httpx.get(f"{server.url}/v1/models/iris").json()["model_version_status"]
        failed = next(s for s in status if s["version"] == "2")
        assert "sha256" in failed["status"]["error_message"]
        assert served_version(server) == "1"  # the latest good version keeps serving
        ready = httpx.get(f"{server.url}/v2/models/iris/versions/2/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "cannot load iris:2" in server.stderr()
    finally:
        assert server.stop() == 0


def hammer(url: str, stop: threading.Event, results: list[int], seconds: float = 20) -> None:
    """Steady traffic until told to stop (and never longer than ``seconds``)."""
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                results.append(client.post(url, json=BODY).status_code)
            except httpx.HTTPError:
                results.append(-1)


@pytest.mark.parametrize("batching", [[], ["--max-batch-size", "8", "--batch-delay-ms", "5"]])
def test_swapping_versions_under_load_fails_no_request(
    repo_copy: Path, iris_data: Any, batching: list[str]
) -> None:
    server = Server(repo_copy, *batching)
    stop, results = threading.Event(), []
    workers = [
        threading.Thread(target=hammer, args=(f"{server.url}/v2/models/iris/infer", stop, results))
        for _ in range(4)
    ]
    try:
        for worker in workers:
            worker.start()
        for _ in range(3):
            export_iris(repo_copy, iris_data)
            time.sleep(0.5)
        newest = str(LocalRepository(repo_copy).versions("iris")[-1])
        assert wait_until(lambda: served_version(server) == newest)
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        assert server.stop() == 0
    assert len(results) > 50
    assert set(results) == {200}, {code: results.count(code) for code in set(results)}


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(repo_copy: Path) -> None:
    # A batching delay keeps requests in flight long enough to be caught by the signal.
    server = Server(repo_copy, "--max-batch-size", "8", "--batch-delay-ms", "300")
    url = f"{server.url}/v2/models/iris/infer"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.post, url, json=BODY, timeout=10) for _ in range(4)]
        time.sleep(0.15)
        code = server.stop()
        replies = [f.result() for f in futures]
    assert code == 0
    assert [r.status_code for r in replies] == [200] * 4
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")


def test_a_drain_pause_keeps_serving_until_the_balancer_has_seen_readiness_drop(
    repo_copy: Path,
) -> None:
    server = Server(repo_copy, "--drain-pause", "1.5")
    url = f"{server.url}/v2/models/iris/infer"
    with httpx.Client(timeout=10) as kept_alive:
        assert kept_alive.post(url, json=BODY).status_code == 200
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 503, timeout=1
        )
        # during the pause: the kept-alive connection and new ones are served
        assert kept_alive.post(url, json=BODY).status_code == 200
        assert httpx.post(url, json=BODY).status_code == 200
        assert time.monotonic() - signalled < 1.5
        assert server.process.wait(timeout=30) == 0
    assert time.monotonic() - signalled >= 1.5
    assert "draining: not ready; serving 1.5 s more, then closing" in server.stderr()
    server.stop()


def test_a_second_signal_ends_the_drain_pause(repo_copy: Path) -> None:
    server = Server(repo_copy, "--drain-pause", "60")
    server.process.send_signal(signal.SIGTERM)
    assert wait_until(lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 503)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0
    server.stop()


def test_batching_groups_concurrent_requests_and_answers_each(repo_copy: Path) -> None:
    server = Server(
        repo_copy, "--max-batch-size", "16", "--batch-delay-ms", "50", "--no-access-log"
    )
    url = f"{server.url}/v2/models/iris/infer"
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 4
    expected = [0, 2, 1] * 4
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            bodies = [
                {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": r}]}
                for r in rows
            ]
            replies = list(pool.map(lambda b: httpx.post(url, json=b, timeout=10), bodies))
        labels = [r.json()["outputs"][0]["data"][0] for r in replies]
        assert labels == expected
        config = httpx.get(f"{server.url}/v2/models/iris/config").json()
        assert config["max_batch_size"] == 16 and config["input"][0]["dims"] == [4]
        metrics = httpx.get(f"{server.url}/metrics").text
        line = next(
            entry
            for entry in metrics.splitlines()
            if entry.startswith('mserve_batch_size_count{model="iris"')
        )
        assert float(line.split()[-1]) < 12  # fewer onnxruntime calls than requests
    finally:
        assert server.stop() == 0


def test_a_full_queue_answers_503_at_once_and_a_late_one_504(repo_copy: Path) -> None:
    server = Server(
        repo_copy,
        "--max-batch-size",
        "64",
        "--batch-delay-ms",
        "400",
        "--max-queue",
        "2",
        "--timeout",
        "0.2",
    )
    url = f"{server.url}/v2/models/iris/infer"
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            started = time.monotonic()
            replies = list(pool.map(lambda _: httpx.post(url, json=BODY, timeout=10), range(6)))
        codes = sorted(r.status_code for r in replies)
        assert 503 in codes and 504 in codes, codes
        overloaded = next(r for r in replies if r.status_code == 503)
        assert overloaded.headers["retry-after"] == "1"
        assert "queue is full" in overloaded.json()["error"]
        timed_out = next(r for r in replies if r.status_code == 504)
        assert "no answer within 0.2 s" in timed_out.json()["error"]
        assert time.monotonic() - started < 5
    finally:
        assert server.stop() == 0


def test_bodies_over_the_limit_get_413(repo_copy: Path) -> None:
    server = Server(repo_copy, "--max-body-mb", "0.001")
    try:
        big = {
            "inputs": [
                {"name": "X", "shape": [100, 4], "datatype": "FP32", "data": np.zeros(400).tolist()}
            ]
        }
        reply = httpx.post(f"{server.url}/v2/models/iris/infer", json=big)
        assert reply.status_code == 413 and "limit" in reply.json()["error"]
    finally:
        assert server.stop() == 0


def test_version_policy_all_serves_every_version(repo_copy: Path, iris_data: Any) -> None:
    export_iris(repo_copy, iris_data)
    server = Server(repo_copy, "--version-policy", "all")
    try:
        assert httpx.get(f"{server.url}/v2/models/iris").json()["versions"] == ["1", "2"]
        assert (
            httpx.post(f"{server.url}/v2/models/iris/versions/1/infer", json=BODY).status_code
            == 200
        )
        LocalRepository(repo_copy).update_state("iris", lambda s: s.retired.append(1))
        assert wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/iris").json()["versions"] == ["2"]
        )
    finally:
        assert server.stop() == 0
