"""Replicas sharing one repository (a folder, or S3 through moto's server): each reports the
repository state it has applied (a metric and the admin status), so one that lags is seen, and
a fleet-wide promote (one repository write) reaches every one."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from mserve.cli.app import app
from typer.testing import CliRunner

import mserve
from mserve.repository import LocalRepository
from mserve.stores import open_repository
from tests.conftest import Server, export_iris, free_port, new_bucket, wait_until

pytestmark = pytest.mark.slow

TOKEN = "test-admin-token-0123456789"
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
STATE_LINE = re.compile(
    r'mserve_model_state_applied\{model="(?P<model>[^"]+)",state="(?P<state>\w+)"\} 1\.0'
)


def applied(server: Server) -> dict[str, str]:
    """model -> the state it has applied, from the server's metrics."""
    found = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        match = STATE_LINE.match(line)
        if match:
            found[match["model"]] = match["state"]
    return found


def status(server: Server) -> dict[str, str]:
    reply = httpx.get(f"{server.url}/admin/models", headers={"Authorization": f"Bearer {TOKEN}"})
    (iris,) = reply.json()["models"]
    return {k: iris[k] for k in ("state_applied", "state_in_repository")}


def test_replicas_report_the_state_they_applied_and_a_lagging_one_shows(repo3: Path) -> None:
    env = {"MSERVE_ADMIN_TOKEN": TOKEN}
    fast = Server(repo3, env=env)
    slow = Server(repo3, "--poll-interval", "600", env=env)  # polls once, at start
    try:
        before = LocalRepository(repo3).state("iris").fingerprint()
        assert applied(fast) == applied(slow) == {"iris": before}

        promoted = CliRunner().invoke(app, ["promote", "iris", "2", "--repo", str(repo3)])
        assert promoted.exit_code == 0, promoted.stderr
        after = LocalRepository(repo3).state("iris").fingerprint()
        assert after != before
        assert wait_until(lambda: applied(fast) == {"iris": after})
        assert status(fast) == {"state_applied": after, "state_in_repository": after}
        assert applied(slow) == {"iris": before}  # it lags, and says so
        assert status(slow) == {"state_applied": before, "state_in_repository": after}
        shown = CliRunner().invoke(
            app, ["status", "--server", slow.url], env={"MSERVE_ADMIN_TOKEN": TOKEN}
        )
        assert f"iris: serves repository state {before}; the repository is at {after}" in (
            " ".join(shown.stdout.split())
        )
    finally:
        assert fast.stop() == 0
        assert slow.stop() == 0


def test_replicas_on_s3_converge_on_a_fleet_promote(
    s3_server: str, tmp_path: Path, iris_pipeline: Any, iris_data: Any
) -> None:
    location = f"s3://{new_bucket()}/models"
    for _ in range(2):
        mserve.export(iris_pipeline, name="iris", repo=location, sample=iris_data[0][:5])
    replicas = [
        Server(location, "--cache-dir", str(tmp_path / f"cache-{n}"), log_dir=tmp_path)
        for n in range(3)
    ]
    try:
        promoted = CliRunner().invoke(app, ["promote", "iris", "1", "--repo", location])
        assert promoted.exit_code == 0, promoted.stderr
        state = open_repository(location).state("iris").fingerprint()
        for replica in replicas:
            assert wait_until(lambda r=replica: applied(r) == {"iris": state})
            answer = httpx.post(f"{replica.url}/v2/models/iris/infer", json=BODY).json()
            assert answer["model_version"] == "1"
    finally:
        for replica in replicas:
            assert replica.stop() == 0


@pytest.fixture
def two_versions(repo: Path, iris_data: Any) -> Path:
    for _ in range(2):
        export_iris(repo, iris_data)
    return repo


def test_a_fleet_promote_waits_for_every_replica_and_names_one_that_is_down(
    two_versions: Path,
) -> None:
    replicas = [Server(two_versions) for _ in range(2)]
    down = f"http://127.0.0.1:{free_port()}"  # a replica that is not running
    try:
        args = ["promote", "iris", "1", "--repo", str(two_versions), "--wait", "--timeout", "3"]
        for replica in replicas:
            args += ["--server", replica.url]
        waited = CliRunner().invoke(app, [*args, "--server", down, "--json"])
        assert waited.exit_code == 3, waited.stderr
        results = {r["target"]: r for r in json.loads(waited.stdout)["results"]}
        assert results[str(two_versions)]["ok"]  # the one write
        for replica in replicas:
            assert results[replica.url]["ok"] and results[replica.url]["served_after_s"] >= 0
        assert not results[down]["ok"]
        assert "was not served by version 1" in results[down]["error"]

        refused = CliRunner().invoke(
            app, ["promote", "iris", "1", "--repo", str(two_versions), "--server", down]
        )
        assert refused.exit_code == 2 and "add --wait" in refused.stderr
    finally:
        for replica in replicas:
            assert replica.stop() == 0


def test_a_name_resolving_to_several_replicas_stands_for_each(
    two_versions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # one port on two loopback addresses, as pods behind a headless Service
    replicas = [
        Server(two_versions, "--host", host, port=port, wait=False)
        for host in ("127.0.0.2", "127.0.0.3")
    ]
    resolve = socket.getaddrinfo

    def headless(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "replicas.test":  # no DNS server here: the Service's records, as DNS gives them
            return [resolve(a, *args, **kwargs)[0] for a in ("127.0.0.2", "127.0.0.3")]
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", headless)
    try:
        for replica, host in zip(replicas, ("127.0.0.2", "127.0.0.3"), strict=True):
            replica.url = f"http://{host}:{port}"
            replica.wait_ready()
        result = CliRunner().invoke(
            app,
            ["promote", "iris", "1", "--repo", str(two_versions), "--wait", "--json",
             "--server", f"http://replicas.test:{port}"],
        )  # fmt: skip
        assert result.exit_code == 0, result.stdout + result.stderr
        targets = [r["target"] for r in json.loads(result.stdout)["results"]][1:]
        assert targets == [f"http://127.0.0.2:{port}", f"http://127.0.0.3:{port}"]
    finally:
        for replica in replicas:
            assert replica.stop() == 0
