"""Cold start and memory of `mserve serve`: time from the process's start to ready, and its
resident memory once ready and after 200 requests, with one tiny model and with the sample
models (scikit-learn, ONNX, XGBoost and LightGBM ones; the PyTorch and Keras samples export
slowly and serve the same way).

    python benchmarks/footprint.py [--runs 5]

Also prints the memory of a bare Python with what the server imports, and of onnxruntime alone,
to show where the resident memory goes. Start-up includes importing, reading the repository and
loading every version; with --workers N each worker pays it (see README).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_models"


def build(folder: Path) -> dict[str, Path]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import mserve

    tiny = folder / "tiny"
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    mserve.export(LogisticRegression(max_iter=300).fit(x, y), name="tiny", repo=tiny, sample=x[:5])
    samples = folder / "samples"
    iris, diabetes = SAMPLES / "iris_sample.csv", SAMPLES / "diabetes_sample.npy"
    for source, name, sample, trusted in (
        ("iris_classifier.joblib", "iris", iris, True),
        ("diabetes_regressor.joblib", "diabetes", diabetes, True),
        ("churn_pipeline.joblib", "churn", SAMPLES / "churn_sample.csv", True),
        ("iris_classifier.onnx", "iris-onnx", iris, False),
        ("iris_xgboost.json", "iris-xgboost", iris, False),
        ("diabetes_lightgbm.txt", "diabetes-lightgbm", diabetes, False),
    ):
        mserve.export(
            SAMPLES / source, name=name, repo=samples, sample=sample, trust_source=trusted
        )
    return {"one tiny model": tiny, "6 sample models": samples}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(repo: Path, port: int) -> tuple[float, float, float]:
    """Seconds to ready, MB resident once ready, MB after 200 requests to the first model."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mserve",
            "serve",
            str(repo),
            "--port",
            str(port),
            "--grpc-port",
            "0",
            "--no-access-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 120:
                raise RuntimeError("not ready in 120 s")
            time.sleep(0.005)
        ready_s = time.perf_counter() - started
        ready_mb = rss_mb(process.pid)
        model = httpx.get(f"{url}/v2/models").json()["models"][0]["name"]
        metadata = httpx.get(f"{url}/v2/models/{model}").json()
        spec = metadata["inputs"][0]
        width = max(1, int(np.prod([d for d in spec["shape"] if d > 0])))
        body = {"inputs": [{**spec, "shape": [1, width], "data": [0.5] * width}]}
        with httpx.Client(base_url=url) as client:
            for _ in range(200):
                client.post(f"/v2/models/{model}/infer", json=body)
        return ready_s, ready_mb, rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def baseline_mb(code: str) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport os; print(open(f'/proc/{{os.getpid()}}/status').read())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    repos = build(Path(tempfile.mkdtemp(prefix="mserve-footprint-")))
    print(f"python alone: {baseline_mb('pass'):.0f} MB")
    print(f"python + onnxruntime: {baseline_mb('import onnxruntime'):.0f} MB")
    imports = "import mserve.server.run, mserve.server.grpc, onnxruntime"
    print(f"python + what the server imports: {baseline_mb(imports):.0f} MB")
    for name, repo in repos.items():
        figures = [start(repo, args.port) for _ in range(args.runs)]
        ready, mb, after = (statistics.median(column) for column in zip(*figures, strict=True))
        print(
            f"{name}: ready in {ready:.2f} s, {mb:.0f} MB resident, {after:.0f} MB after 200 "
            f"requests (medians of {args.runs})"
        )


if __name__ == "__main__":
    main()
