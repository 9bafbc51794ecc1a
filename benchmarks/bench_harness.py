"""Does `mserve bench` measure the model and the server, not itself?

    python benchmarks/bench_harness.py [--runs 3]

Local: `mserve bench MODEL --json` against a bare onnxruntime loop on the same model, same
session options, both pinned to CPU 0, runs interleaved; the ratios of throughput and p50 should
be ~1.00. Remote: a `mserve serve` on CPU 0, and on CPU 1 either `mserve bench --server` (its load
generator, one process) or wrk (the shared load method, when installed) against the same
endpoints: the server's cheapest one (the generator's ceiling) and V2 JSON inference.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from common import start

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LOADGEN = HERE.parent.parent / "shared" / "loadgen"
ROW = {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
BARE_LOOP = """
import sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
x = {s.get_inputs()[0].name: np.load(sys.argv[2])}
for _ in range(10): s.run(None, x)
times, clock = [], time.perf_counter_ns
begin = clock(); deadline = begin + int(float(sys.argv[3]) * 1e9)
while True:
    t0 = clock(); s.run(None, x); t1 = clock(); times.append(t1 - t0)
    if t1 >= deadline: break
seconds = (clock() - begin) / 1e9
print(len(times) / seconds, float(np.percentile(np.array(times) / 1e6, 50)))
"""


def build(repo: Path) -> dict[str, tuple[str, int]]:
    """benchmarks/server.py's models: tiny (logistic regression, 4 features) and an MLP."""
    from server import build_models

    build_models(repo)
    return {"tiny": ("X", 4), "mlp": ("x", 256)}


def local(repo: Path, models: dict[str, tuple[str, int]], runs: int, seconds: float) -> None:
    print(f"## local: {seconds:g} s per run, {runs} interleaved runs, both on CPU 0, 1 thread")
    for model, (_, width) in models.items():
        onnx_path = repo / model / "1" / "model.onnx"
        row = repo.parent / f"{model}-row.npy"
        np.save(row, np.random.default_rng(0).standard_normal((1, width)).astype(np.float32))
        bare, ours = [], []
        for _ in range(runs):
            out = subprocess.run(
                ["taskset", "-c", "0", sys.executable, "-c", BARE_LOOP, str(onnx_path), str(row),
                 str(seconds)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            rps, p50 = map(float, out.stdout.split())
            bare.append((rps, p50))
            out = subprocess.run(
                ["taskset", "-c", "0", str(BIN / "mserve"), "bench", f"{model}:1", "--repo",
                 str(repo), "--duration", str(seconds), "--threads", "1", "--input", str(row),
                 "--json"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout)["results"][0]
            ours.append((result["throughput_rps"], result["latency_ms"]["p50"]))
        b_rps, b_p50 = (statistics.median(v) for v in zip(*bare, strict=True))
        o_rps, o_p50 = (statistics.median(v) for v in zip(*ours, strict=True))
        print(
            f"{model:5s} bare loop {b_rps:10,.0f} req/s p50 {b_p50:.4f} ms | mserve bench "
            f"{o_rps:10,.0f} req/s p50 {o_p50:.4f} ms | ratio throughput {o_rps / b_rps:.3f}, "
            f"p50 {o_p50 / b_p50:.3f}"
        )


def remote(repo: Path, seconds: float) -> None:
    print(f"## remote: server on CPU 0, client on CPU 1, {seconds:g} s per run")
    port = 18650
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["taskset", "-c", "0", str(BIN / "mserve"), "serve", str(repo), "--port", str(port),
         "--grpc-port", "0", "--no-access-log", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # A server just started answers its first seconds slower (allocators, caches): warm it.
        with httpx.Client(base_url=url) as client:
            for _ in range(2000):
                client.post("/v2/models/tiny/versions/1/infer", json={"inputs": [ROW]})
        for c in (1, 64):
            out = subprocess.run(
                ["taskset", "-c", "1", str(BIN / "mserve"), "bench", "tiny", "--server", url,
                 "--concurrency", str(c), "--duration", str(seconds), "--workers", "1", "--json"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            document = json.loads(out.stdout)
            result = document["results"][0]
            print(
                f"mserve bench (1 process), c={c:2d}: generator ceiling "
                f"{document['setup']['generator_ceiling_rps']:9,.0f} req/s; tiny V2 JSON "
                f"{result['throughput_rps']:9,.0f} req/s, p50 {result['latency_ms']['p50']:.3f} ms"
            )
            if shutil.which("wrk"):
                print(f"  wrk, c={c}: {wrk_get(url + '/v2/health/live', c, seconds)} (ceiling)")
                body = repo.parent / "tiny.json"
                body.write_text(json.dumps({"inputs": [ROW]}))
                out = subprocess.run(
                    ["bash", str(LOADGEN / "load.sh"), f"{url}/v2/models/tiny/versions/1/infer",
                     str(body), str(c), str(int(seconds))],
                    capture_output=True, text=True, env={**os.environ, "LABEL": "wrk"},
                    check=False,
                )  # fmt: skip
                print(f"  {out.stdout.strip() or out.stderr.strip()[:300]}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def wrk_get(url: str, connections: int, seconds: float) -> str:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = next(line for line in out.stdout.splitlines() if line.startswith("Requests/sec"))
    return f"{float(rate.split()[1]):,.0f} req/s GET"


def main() -> None:
    args = start(__doc__ or "", runs=3)
    work = Path(tempfile.mkdtemp(prefix="mserve-bench-harness-"))
    repo = work / "models"
    models = build(repo)
    local(repo, models, args.runs, seconds=3.0)
    remote(repo, seconds=5.0)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
