"""A soak: steady load while versions come and go, and whether the server's resources stay flat.

    python benchmarks/soak.py [--seconds 120] [--every 3]

A server (pinned to CPU 0, admin token on, batching off) serves a small scikit-learn model;
wrk (one thread on CPU 1, 16 connections) sends batch-1 KServe V2 requests to the default
route for the whole run. Every EVERY seconds a new version is exported, `stable` moves to it
through the admin API, and the oldest version without a label is retired. The server's
resident memory, open files and threads are sampled every second.

Reported: requests/s and wrk's errors (non-2xx, socket errors, timeouts: must be 0); the
versions published and retired; RSS, open files and threads at the first sample after warm-up,
at the end, and their largest, with the slope of RSS over the second half (MB per minute).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import launch

BIN = Path(sys.executable).parent
LOADGEN = Path(__file__).resolve().parents[2] / "shared" / "loadgen"
TOKEN = "benchmark-admin-token-0123456789"
BODY = b'{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
WARMUP_S = 10


def export(repo: Path, seed: int) -> int:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mserve

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    rows = np.random.default_rng(seed).choice(len(x), size=120, replace=False)
    model = LogisticRegression(max_iter=300).fit(x[rows], y[rows])
    return mserve.export(model, name="iris", repo=repo, sample=x[:5]).version


def sample(pid: int) -> tuple[float, int, int]:
    """RSS (MB), open files and threads of process PID."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss = int(status["VmRSS"].split()[0]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def churn(url: str, repo: Path, every: float, stop: threading.Event, log: list[str]) -> None:
    """Publish, promote and retire until STOP."""
    admin = httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    seed = 1
    while not stop.wait(every):
        seed += 1
        version = export(repo, seed)
        # wait until the server has loaded it, then move stable there
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(f"{url}/v2/models/iris/versions/{version}/ready").status_code == 200:
                break
            time.sleep(0.05)
        reply = admin.post("/admin/models/iris/promote", json={"version": version})
        log.append(f"promote {version}: {reply.status_code}")
        state = admin.get("/admin/models/iris").json()
        live = sorted(
            v["version"] for v in state["versions"] if not v.get("retired") and not v.get("labels")
        )
        if len(live) > 2:  # keep the newest unlabelled ones; the previous stable is among them
            reply = admin.post("/admin/models/iris/retire", json={"version": live[0]})
            log.append(f"retire {live[0]}: {reply.status_code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--every", type=float, default=3.0)
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; soak {args.seconds} s, "
        f"a version every {args.every:g} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        export(repo, 0)
        export(repo, 1)
        body = Path(tmp) / "body.json"
        body.write_bytes(BODY)
        port = 18500
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "MSERVE_ADMIN_TOKEN": TOKEN}
        server = launch(
            ["taskset", "-c", "0", str(BIN / "mserve"), "serve", str(repo), "--port", str(port),
             "--grpc-port", "0", "--no-access-log", "--poll-interval", "0.5"],
            f"{url}/v2/health/ready",
            env,
        )  # fmt: skip
        samples: list[tuple[float, float, int, int]] = []
        stop = threading.Event()
        log: list[str] = []
        churner = threading.Thread(target=churn, args=(url, repo, args.every, stop, log))
        wrk = subprocess.Popen(
            ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{args.seconds}s", "--timeout", "10s",
             "-s", str(LOADGEN / "post.lua"), f"{url}/v2/models/iris/infer"],
            env={**env, "BODYFILE": str(body)},
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        began = time.monotonic()
        churner.start()
        try:
            while wrk.poll() is None:
                samples.append((time.monotonic() - began, *sample(server.pid)))
                time.sleep(1)
            stop.set()
            churner.join(60)
            out = wrk.communicate()[0]
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=30)
    fields = dict(kv.split("=") for kv in out.split("RESULT ", 1)[1].split())
    published = sum(line.startswith("promote") for line in log)
    retired = sum(line.startswith("retire") for line in log)
    failed = [line for line in log if not line.endswith(": 200")]
    print(
        f"load: {float(fields['rps']):.0f} req/s, p99 {float(fields['p99_ms']):.2f} ms, "
        f"errors {int(float(fields['errors']))}; {published} versions promoted, {retired} retired"
        + (f"; failed changes: {failed}" if failed else "")
    )
    steady = [s for s in samples if s[0] >= WARMUP_S] or samples
    half = steady[len(steady) // 2 :]
    slope = (
        np.polyfit([s[0] for s in half], [s[1] for s in half], 1)[0] * 60 if len(half) > 2 else 0
    )
    for index, name, unit in ((1, "RSS", "MB"), (2, "open files", ""), (3, "threads", "")):
        first, last = steady[0][index], steady[-1][index]
        peak = max(s[index] for s in steady)
        print(
            f"{name:10} first {first:8.1f}{unit}  last {last:8.1f}{unit}  largest {peak:8.1f}{unit}"
        )
    print(f"RSS slope over the second half: {slope:+.2f} MB/min")


if __name__ == "__main__":
    main()
