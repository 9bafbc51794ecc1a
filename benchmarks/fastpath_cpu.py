"""CPU time of the fast path's own work per request, old build against new, interleaved.

    python benchmarks/fastpath_cpu.py --old /path/to/old/checkout [--rounds 5] [--calls 20000]

Where wrk's figures scatter by ±30% (a VM whose neighbours take its cycles), the CPU time a
process was given does not: each build answers CALLS batch-1 V2 JSON requests to the tiny
logistic regression through ``RestApp.infer_direct`` (everything the server does for a request
between parsing its HTTP and writing its answer: routing, the host check, decoding, onnxruntime,
encoding, metrics, headers, the access log off), in a fresh process, timed with
``time.process_time``. Rounds alternate the order; prints each figure and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ab import importable
from server import build_models

CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
from mserve.server.run import build
from mserve.server.settings import ServerSettings
from mserve.server.rest.routes import InferRoute

repo, calls = Path(sys.argv[1]), int(sys.argv[2])
server = build(ServerSettings(repo, access_log=False, grpc_port=0))
server.plane.manager.refresh()
server.plane.started = True
path = "/v2/models/tiny/infer"
server.rest.routes.infer_routes[path] = InferRoute("v2", "infer", path, "tiny")
row = [5.1, 3.5, 1.4, 0.2]
body = json.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]})
headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
loop = asyncio.new_event_loop()
for _ in range(2000):  # warm-up: caches, the version's cost estimate (inline from then on)
    answer = server.rest.infer_direct(path, headers, body.encode(), time.perf_counter())
    if not isinstance(answer, tuple):  # off the loop until the version is known to be cheap
        answer = loop.run_until_complete(answer)
    assert answer[0] == 200, answer
assert isinstance(server.rest.infer_direct(path, headers, body.encode(), 0.0), tuple)
encoded = body.encode()
start = time.process_time()
for _ in range(calls):
    server.rest.infer_direct(path, headers, encoded, time.perf_counter())
print((time.process_time() - start) / calls * 1e6)
"""


def measure(source: Path | None, repo: Path, calls: int) -> float:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", CHILD, str(repo), str(calls)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp(prefix="mserve-fastpath-")) / "models"
    build_models(repo)
    old_tree = importable(args.old.resolve())
    figures: dict[str, list[float]] = {"old": [], "new": []}
    for round_number in range(args.rounds):
        order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
        for name in order:
            micros = measure(old_tree if name == "old" else None, repo, args.calls)
            figures[name].append(micros)
            print(f"round {round_number + 1} {name}: {micros:.2f} us CPU per request", flush=True)
    old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
    print(json.dumps({"old_us": round(old, 2), "new_us": round(new, 2)}))
    print(f"median: old {old:.2f} us, new {new:.2f} us per request: new/old {new / old:.3f}x")


if __name__ == "__main__":
    main()
