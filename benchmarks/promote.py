"""Time from `mserve promote --wait` to traffic served by the new version, under steady load.

    python benchmarks/promote.py [--runs 10]

A server (admin token on) serves two versions of a small scikit-learn model; four client threads
send batch-1 KServe V2 requests to the default route without pause. Each run promotes the other
version with `mserve promote MODEL V --server URL --wait` (a fresh CLI process, as a CI job runs
it) and records: the command's wall time; when the first response from the new version arrived,
counted from the command's start; and how many requests the old version still answered after the
command returned (in flight at the swap). Also timed: the admin API call alone (no CLI process).
Every request must succeed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import launch, start

BIN = Path(sys.executable).parent
TOKEN = "benchmark-admin-token-0123456789"
BODY = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


def build(repo: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mserve

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    for c in (1.0, 0.5):
        model = LogisticRegression(C=c, max_iter=500).fit(x, y)
        mserve.export(model, name="iris", repo=repo, sample=x[:8])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """Client threads recording (arrival time, status, version) of every response."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.records: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            deadline = time.monotonic() + 600
            while not self._stop.is_set() and time.monotonic() < deadline:
                reply = client.post("/v2/models/iris/infer", json=BODY)
                version = reply.json().get("model_version", "") if reply.status_code == 200 else ""
                self.records.append((time.monotonic(), reply.status_code, str(version)))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def serve(repo: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "mserve"), "serve", str(repo), "--port", str(port), "--grpc-port", "0"]
    return launch([*command, "--no-access-log"], f"{url}/v2/health/ready", env), url


def cli_promotes(url: str, env: dict[str, str], load: Load, runs: int) -> dict[str, list[float]]:
    """Each run: `mserve promote --wait` to the other version, timed against the load."""
    figures: dict[str, list[float]] = {"wall": [], "first_new": [], "old_after": []}
    for run in range(runs):
        target = str(2 - run % 2)
        began = time.monotonic()
        subprocess.run(
            [str(BIN / "mserve"), "promote", "iris", target, "--server", url, "--wait"],
            env=env,
            check=True,
            capture_output=True,
        )
        returned = time.monotonic()
        time.sleep(0.5)
        figures["wall"].append(returned - began)
        figures["first_new"].append(
            min(t for t, _, v in load.records if t >= began and v == target) - began
        )
        figures["old_after"].append(
            len([t for t, _, v in load.records if t > returned and v != target])
        )
    return figures


def api_promotes(url: str, runs: int) -> list[float]:
    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        for run in range(runs):
            began = time.perf_counter()
            body = {"version": 1 + run % 2}
            admin.post("/admin/models/iris/promote", json=body, timeout=60).raise_for_status()
            times.append(time.perf_counter() - began)
    return times


def ms(values: list[float]) -> str:
    median, most = statistics.median(values) * 1000, max(values) * 1000
    return f"median {median:7.1f} ms, max {most:7.1f} ms"


def main() -> None:
    args = start(__doc__ or "", runs=10)
    repo = Path(tempfile.mkdtemp(prefix="mserve-promote-")) / "models"
    build(repo)
    env = {**os.environ, "MSERVE_ADMIN_TOKEN": TOKEN}
    server, url = serve(repo, env)
    try:
        httpx.post(
            f"{url}/admin/models/iris/promote",
            json={"version": 1},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        ).raise_for_status()
        with Load(url) as load:
            time.sleep(1)
            cli = cli_promotes(url, env, load, args.runs)
            api = api_promotes(url, args.runs)
        failed = [r for r in load.records if r[1] != 200]
        print(f"requests during the runs: {len(load.records)}, failed: {len(failed)}")
        print(f"mserve promote --wait (CLI process), wall time:       {ms(cli['wall'])}")
        print(f"first response from the new version after its start: {ms(cli['first_new'])}")
        print(f"admin API promote call alone (label moved, served):    {ms(api)}")
        print(
            "responses from the old version after the command returned: "
            f"max {max(cli['old_after']):.0f} (requests in flight at the swap)"
        )
        if failed:
            sys.exit(f"{len(failed)} requests failed")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
