"""``mserve serve s3://...``: a server on an object store (moto's S3 API on loopback) serves
from its cache, follows new versions and label changes, and rides out the store going away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from moto.server import ThreadedMotoServer

import mserve
from mserve.stores import open_repository
from tests.conftest import Server, free_port, new_bucket, wait_until

BODY = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


def metric(server: Server, name: str) -> float | None:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def ready(server: Server, version: int) -> bool:
    url = f"{server.url}/v2/models/iris/versions/{version}/ready"
    return httpx.get(url).status_code == 200


def test_a_server_on_s3_follows_the_store_and_rides_out_an_outage(
    s3_server: str, tmp_path: Path, iris_pipeline: Any, iris_data: Any
) -> None:
    location = f"s3://{new_bucket()}/models"

    def export() -> int:
        return mserve.export(
            iris_pipeline, name="iris", repo=location, sample=iris_data[0][:5]
        ).version

    export()
    port = free_port()  # the server's own way to the store, which the test can cut
    store = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    store.start()
    cache = tmp_path / "cache"
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}
    server = Server(location, "--cache-dir", str(cache), env=env, log_dir=tmp_path)
    try:
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY).status_code == 200
        assert (cache / "iris" / "1" / "model.onnx").is_file()
        assert metric(server, "mserve_repository_up") == 1.0

        assert export() == 2  # picked up; version 1 leaves the server and its cache
        assert wait_until(lambda: ready(server, 2))
        assert wait_until(lambda: not (cache / "iris" / "1").exists())

        store.stop()  # the store goes away: what is served stays served
        assert wait_until(lambda: metric(server, "mserve_repository_up") == 0.0)
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY).status_code == 200
        status = httpx.get(f"{server.url}/v1/models/iris").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        assert export() == 3  # through the test's own way to the store
        assert not ready(server, 3)

        store = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        store.start()  # back: the server catches up
        assert wait_until(lambda: ready(server, 3), timeout=30)
        assert metric(server, "mserve_repository_up") == 1.0
    finally:
        assert server.stop() == 0
        store.stop()
    log = server.stderr()
    assert f"serving {location} on http://127.0.0.1:{server.port}" in log
    assert log.count("the model repository cannot be reached") == 1, log
    assert "the model repository can be reached again" in log
    assert "Traceback" not in log
    assert "mserve-test-secret" not in log


def test_admin_changes_on_a_server_on_s3_go_to_the_store(
    s3_server: str, tmp_path: Path, iris_pipeline: Any, iris_data: Any
) -> None:
    location = f"s3://{new_bucket()}/models"
    for _ in range(2):
        mserve.export(iris_pipeline, name="iris", repo=location, sample=iris_data[0][:5])
    token = "test-admin-token-0123456789"
    cache = tmp_path / "cache"
    server = Server(
        location, "--cache-dir", str(cache), env={"MSERVE_ADMIN_TOKEN": token}, log_dir=tmp_path
    )
    try:
        assert not (cache / "iris" / "1").exists()  # latest:1 serves version 2 alone
        promoted = httpx.post(
            f"{server.url}/admin/models/iris/promote",
            json={"version": 1},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert promoted.status_code == 200, promoted.text
        assert open_repository(location).state("iris").labels == {"stable": 1}
        assert (cache / "iris" / "1" / "model.onnx").is_file()  # fetched to be served
        answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY).json()
        assert answer["model_version"] == "1"  # stable, served at once
        status = httpx.get(
            f"{server.url}/admin/models", headers={"Authorization": f"Bearer {token}"}
        ).json()
        (iris,) = status["models"] if isinstance(status, dict) else status
        assert iris["labels_in_repository"] == {"stable": 1}
        assert [row["version"] for row in iris["versions"]] == [1, 2]
    finally:
        assert server.stop() == 0
