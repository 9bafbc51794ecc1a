"""What a large JSON body does to everyone else: the health probe's latency while one arrives.

    python benchmarks/large_body.py [--old /path/to/old/checkout] [--mb 50] [--runs 3]

A server (batching off) serves a small scikit-learn model. A prober sends liveness requests one
after another on one connection for the whole run, while RUNS requests with a JSON body of
about MB megabytes (rows of the model's four features) are sent one at a time, each after a
second of quiet: KServe V2 (flat data), then TF Serving (``instances``, a list a row).
Reported per build: the large request's time (median) and the probe's latency while large
requests were in flight (median, 99th percentile and largest). With ``--old`` the other build
(see ab.py) is measured in the same run, in alternating order, and the ratios new/old printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
from ab import importable
from common import launch
from soak import export

PORT = 18700


def bodies(megabytes: float) -> dict[str, tuple[str, bytes]]:
    """V2 (flat data) and TF Serving (rows) bodies of about MEGABYTES, by the path they go to."""
    rows = int(megabytes * 1e6 / 39)  # about 39 bytes of JSON a row
    x = np.random.default_rng(0).uniform(0, 8, (rows, 4)).astype(np.float32)
    tensor = {"name": "X", "shape": [rows, 4], "datatype": "FP32", "data": x.ravel()}
    numpy = orjson.OPT_SERIALIZE_NUMPY
    return {
        "v2": ("/v2/models/iris/infer", orjson.dumps({"inputs": [tensor]}, option=numpy)),
        "tf": ("/v1/models/iris:predict", orjson.dumps({"instances": x}, option=numpy)),
    }


def measure(
    source: Path | None, repo: Path, path: str, payload: bytes, runs: int
) -> dict[str, float]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    port = PORT
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "mserve",
        "serve",
        str(repo),
        "--port",
        str(port),
        "--grpc-port",
        "0",
    ]
    server = launch(command, f"{url}/v2/health/ready", env=env)
    probes: list[tuple[float, float]] = []  # (sent at, seconds)
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                sent = time.perf_counter()
                client.get(f"{url}/v2/health/live")
                probes.append((sent, time.perf_counter() - sent))

    prober = threading.Thread(target=probe)
    prober.start()
    spans, times = [], []
    try:
        with httpx.Client(timeout=120) as client:
            for _ in range(runs):
                time.sleep(1)
                begin = time.perf_counter()
                response = client.post(url + path, content=payload)
                end = time.perf_counter()
                assert response.status_code == 200, response.text[:200]
                spans.append((begin, end))
                times.append(end - begin)
    finally:
        done.set()
        prober.join()
        server.terminate()
        server.wait()
    during = sorted(s for at, s in probes if any(b <= at + s and at <= e for b, e in spans))
    return {
        "large request s": statistics.median(times),
        "probe median ms": 1000 * statistics.median(during),
        "probe p99 ms": 1000 * during[int(0.99 * (len(during) - 1))],
        "probe max ms": 1000 * during[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--old", type=Path)
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    repo = Path(tempfile.mkdtemp(prefix="mserve-large-")) / "models"
    export(repo, seed=0)
    made = bodies(args.mb)
    builds: list[tuple[str, Path | None]] = [("new", None)]
    if args.old is not None:
        builds.append(("old", importable(args.old)))
    for kind, (path, payload) in made.items():
        print(f"{kind}: {len(payload) / 1e6:.1f} MB of JSON to {path}")
        results: dict[str, dict[str, float]] = {}
        for name, source in builds if args.old is None else [*builds, *reversed(builds)]:
            figures = measure(source, repo, path, payload, args.runs)
            print(name, "  ".join(f"{k} {v:.3g}" for k, v in figures.items()))
            kept = results.setdefault(name, figures)
            for key, value in figures.items():
                kept[key] = min(kept[key], value)  # the better of the two rounds
        if "old" in results:
            for key in results["new"]:
                print(f"  {key}: new/old {results['new'][key] / results['old'][key]:.3g}")


if __name__ == "__main__":
    main()
