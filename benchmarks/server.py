"""Server throughput and latency, measured the way the peers in issue 4 were.

    python benchmarks/server.py [--seconds 5] [--concurrency 1 8 64]

The server is pinned to CPU 0, wrk (one thread) to CPU 1. Models: a tiny scikit-learn logistic
regression on 4 features, and an MLP 256 -> 1024 -> 1024 -> 10, with batching on (from its
model.json settings) and, as mlp-inline, without. Bodies are batch-1 KServe V2 requests: JSON
and binary over HTTP (wrk), and ModelInfer over gRPC (h2load, nghttp2's native HTTP/2 load
generator). Measured in the same run, for scale: the bare ASGI + onnxruntime app (bare_app.py,
the issue's reference) and the same work on a raw uvloop protocol without ASGI (raw_app.py, the
floor of any Python server here) on the same models, each also answering a constant (wrk's and
uvicorn's ceilings), and a bare onnxruntime loop (the compute limit).
Results go to stdout and, as JSON lines, to benchmarks/server-results.jsonl.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import launch

HERE = Path(__file__).resolve().parent
LOADGEN = HERE.parent.parent / "shared" / "loadgen"
BIN = Path(sys.executable).parent
RESULTS = HERE / "server-results.jsonl"
INPUTS = {"tiny": ("X", 4), "mlp": ("x", 256), "mlp-inline": ("x", 256)}  # input, width


def build_models(repo: Path) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mserve
    from mserve.repository import LocalRepository

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    mserve.export(LogisticRegression(max_iter=500).fit(x, y), name="tiny", repo=repo, sample=x[:8])

    rng = np.random.default_rng(0)
    sizes = [256, 1024, 1024, 10]
    nodes, weights, previous = [], [], "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        weights.append(
            numpy_helper.from_array(
                (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32), f"w{i}"
            )
        )
        weights.append(numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}"))
        nodes += [
            helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        previous = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
            previous = f"r{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = repo.parent / "mlp.onnx"
    onnx.save(model, source)
    mserve.export(
        source, name="mlp", repo=repo, sample=rng.normal(size=(4, 256)).astype(np.float32)
    )
    LocalRepository(repo).update_state(
        "mlp", lambda s: s.settings.update(max_batch_size=64, max_queue_delay_ms=0, max_queue=1024)
    )
    # The same MLP run inline (no batching): the comparison of transports issue 11 asks for.
    mserve.export(
        source, name="mlp-inline", repo=repo, sample=rng.normal(size=(4, 256)).astype(np.float32)
    )
    return {"tiny": repo / "tiny" / "1" / "model.onnx", "mlp": repo / "mlp" / "1" / "model.onnx"}


def bodies(folder: Path) -> dict[str, tuple[Path, int | None]]:
    """name -> (body file, JSON header length for binary bodies)."""
    rng = np.random.default_rng(1)
    made: dict[str, tuple[Path, int | None]] = {}
    for model, (name, width) in INPUTS.items():
        row = rng.normal(size=width).astype(np.float32)
        text = folder / f"{model}.json"
        text.write_text(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": name,
                            "shape": [1, width],
                            "datatype": "FP32",
                            "data": row.tolist(),
                        }
                    ]
                }
            )
        )
        made[f"{model}-json"] = (text, None)
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": name,
                        "shape": [1, width],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 4 * width},
                    }
                ]
            }
        ).encode()
        binary = folder / f"{model}.bin"
        binary.write_bytes(header + row.tobytes())
        made[f"{model}-binary"] = (binary, len(header))
    return made


def start(
    command: list[str], url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A server pinned to CPU 0 (wrk runs on CPU 1)."""
    return launch(["taskset", "-c", "0", *command], url, env, log)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def load(
    label: str, url: str, body: Path, header_length: int | None, *, concurrency: int, seconds: int
) -> dict[str, Any]:
    env = {**os.environ, "BODYFILE": str(body), "LOADGEN_CPU": "1"}
    if header_length is None:  # JSON: the shared load method, exactly as the peers were measured
        out = subprocess.run(
            ["bash", str(LOADGEN / "load.sh"), url, str(body), str(concurrency), str(seconds)],
            env={**env, "LABEL": label, "RESULTS": str(RESULTS)},
            capture_output=True,
            text=True,
            check=True,
        )
        print(out.stdout.strip(), flush=True)
        line = RESULTS.read_text().splitlines()[-1]
        return dict(json.loads(line))
    env["HEADER_LENGTH"] = str(header_length)
    wrk = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{concurrency}",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post_binary.lua"),
        url,
    ]
    subprocess.run([*wrk[:5], "-d2s", *wrk[5:]], env=env, capture_output=True, check=True)
    time.sleep(1)
    out = subprocess.run(
        [*wrk[:5], f"-d{seconds}s", "--latency", *wrk[5:]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(kv.split("=") for kv in out.split("RESULT ", 1)[1].split())
    result = {
        "label": label,
        "url": url,
        "concurrency": concurrency,
        **{k: float(v) for k, v in fields.items()},
    }
    print(
        f"{label:50} c={concurrency:<3} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.3f} ms"
        f"  p90 {result['p90_ms']:8.3f} ms  p99 {result['p99_ms']:8.3f} ms  errors "
        f"{int(result['errors'])}",
        flush=True,
    )
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def grpc_body(folder: Path, model: str, name: str, width: int) -> Path:
    """A ModelInferRequest in gRPC's framing (flag byte, 4-byte length), as h2load sends it."""
    from mserve.protocol import v2_grpc

    row = np.random.default_rng(1).normal(size=(1, width)).astype(np.float32)
    message = v2_grpc.encode_request(model, "", {name: (row, "FP32")})
    path = folder / f"{model}.grpc"
    path.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    return path


def grpc_load(
    label: str, address: str, body: Path, *, concurrency: int, seconds: int
) -> dict[str, Any]:
    """ModelInfer calls from h2load (nghttp2's native HTTP/2 load generator, one thread on
    CPU 1), one call in flight per connection. A call that fails still answers HTTP 200 (its
    status is in the trailers), so the caller checks one call with a real client first."""
    h2load = ["taskset", "-c", "1", "h2load", "-t1", f"-c{concurrency}", "-m1", "-d", str(body)]
    h2load += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    url = f"http://{address}/inference.GRPCInferenceService/ModelInfer"
    out = subprocess.run(
        [*h2load, "-D", str(seconds), "--warm-up-time", "2", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(out.split("finished in ", 1)[1].split(", ")[1].split(" req/s")[0])
    failed = out.split("requests: ", 1)[1].split(" failed")[0].rsplit(" ", 1)[-1]
    result = {"label": label, "url": url, "concurrency": concurrency, "rps": rps}
    result["errors"] = float(failed)
    print(f"{label:50} c={concurrency:<3} {rps:9.1f} req/s  errors {failed}", flush=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")
    return result


def check_grpc(address: str, model: str, name: str, width: int) -> None:
    """One call with grpcio's client: the load's calls would fail the same way."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=[1, width])
    request.raw_input_contents.append(np.ones((1, width), np.float32).tobytes())
    with grpc.insecure_channel(address) as channel:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)


def onnxruntime_loop(path: Path, width: int, seconds: float = 3.0) -> float:
    """Batch-1 requests per second of a bare onnxruntime session on one core (compute limit)."""
    code = (
        "import time, numpy as np, onnxruntime as ort\n"
        "o = ort.SessionOptions(); o.intra_op_num_threads = 1\n"
        f"s = ort.InferenceSession({str(path)!r}, o, providers=['CPUExecutionProvider'])\n"
        f"x = {{s.get_inputs()[0].name: np.ones((1, {width}), np.float32)}}\n"
        "for _ in range(200): s.run(None, x)\n"
        f"n, t = 0, time.perf_counter()\n"
        f"while time.perf_counter() - t < {seconds}:\n    s.run(None, x); n += 1\n"
        "print(n / (time.perf_counter() - t))\n"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


BARE_APP = [
    str(BIN / "uvicorn"),
    "bare_app:app",
    "--port",
    "18600",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--app-dir",
    str(HERE),
]
# name -> (label of its constant reply, label of its /infer runs)
APPS = {
    "raw": ("wrk ceiling (raw protocol, constant reply)", "raw protocol+onnxruntime"),
    "bare": ("uvicorn ceiling (bare ASGI app, constant reply)", "bare ASGI+onnxruntime"),
}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename} {os.cpu_count()} cores; "
        f"server on CPU 0, wrk on CPU 1; {args.seconds} s per run"
    )
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install -y {package}")
    work = Path(tempfile.mkdtemp(prefix="mserve-bench-"))
    paths = build_models(work / "models")
    made = bodies(work)
    for model, width in (("tiny", 4), ("mlp", 256)):
        print(f"bare onnxruntime loop, {model}: {onnxruntime_loop(paths[model], width):9.1f} req/s")

    for model in ("tiny", "mlp"):
        for name, command, port in (
            ("raw", [sys.executable, str(HERE / "raw_app.py"), "18599"], 18599),
            ("bare", BARE_APP, 18600),
        ):
            app = start(
                command,
                f"http://127.0.0.1:{port}/",
                {**os.environ, "MODEL_PATH": str(paths[model])},
            )
            try:
                if model == "tiny":
                    load(
                        APPS[name][0],
                        f"http://127.0.0.1:{port}/",
                        made["tiny-json"][0],
                        None,
                        concurrency=64,
                        seconds=args.seconds,
                    )
                for c in args.concurrency:
                    load(
                        f"{APPS[name][1]} {model} json",
                        f"http://127.0.0.1:{port}/infer",
                        made[f"{model}-json"][0],
                        None,
                        concurrency=c,
                        seconds=args.seconds,
                    )
            finally:
                stop(app)

    port, grpc_port = 18601, 18602
    server = start(
        [
            str(BIN / "mserve"),
            "serve",
            str(work / "models"),
            "--port",
            str(port),
            "--no-access-log",
            "--grpc-port",
            str(grpc_port),
            "--threads",
            "1",
        ],
        f"http://127.0.0.1:{port}/v2/health/ready",
    )
    try:
        for model, (name, width) in INPUTS.items():
            for kind in ("json", "binary"):
                body, header_length = made[f"{model}-{kind}"]
                for c in args.concurrency:
                    load(
                        f"mserve {model} v2 {kind}",
                        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                        body,
                        header_length,
                        concurrency=c,
                        seconds=args.seconds,
                    )
            address = f"127.0.0.1:{grpc_port}"
            check_grpc(address, model, name, width)
            body = grpc_body(work, model, name, width)
            for c in args.concurrency:
                grpc_load(
                    f"mserve {model} v2 grpc", address, body, concurrency=c, seconds=args.seconds
                )
    finally:
        stop(server)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
