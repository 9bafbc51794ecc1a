"""Export time per framework, on the bundled samples.

    python benchmarks/export.py [--runs N]

For each sample, in a fresh process: the time to import the framework and its converter, the
first export (convert, check, parity, publish), and a second, warm export of the same model.
Then the wall time of the whole ``mserve export`` command (median of N fresh processes), which
is what a CI job pays.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import start, timed

ROOT = Path(__file__).resolve().parent.parent
S = ROOT / "sample_models"
MSERVE = str(Path(sys.executable).with_name("mserve"))

# name, source, sample, imports that the conversion needs, extra export arguments
CASES = [
    (
        "sklearn pipeline",
        S / "iris_classifier.joblib",
        S / "iris_sample.csv",
        "sklearn, skl2onnx",
        {"trust_source": True},
    ),
    (
        "sklearn mixed-type",
        S / "churn_pipeline.joblib",
        S / "churn_sample.csv",
        "sklearn, skl2onnx, pandas",
        {"trust_source": True},
    ),
    ("onnx file", S / "iris_classifier.onnx", S / "iris_sample.csv", "onnx", {}),
    (
        "pytorch .pt2",
        S / "iris_mlp.pt2",
        S / "iris_sample.csv",
        "torch, onnxscript",
        {"trust_source": True},
    ),
    (
        "pytorch torchscript",
        S / "iris_mlp_torchscript.pt",
        S / "iris_sample.csv",
        "torch, onnxscript",
        {"trust_source": True},
    ),
    (
        "keras .keras",
        S / "iris_two_inputs.keras",
        S / "iris_two_inputs_sample.npz",
        "tensorflow, keras, tf2onnx",
        {"trust_source": True},
    ),
    (
        "tensorflow savedmodel",
        S / "iris_two_inputs_savedmodel",
        S / "iris_two_inputs_sample.npz",
        "tensorflow, tf2onnx",
        {"trust_source": True},
    ),
    ("xgboost .json", S / "iris_xgboost.json", S / "iris_sample.csv", "xgboost, onnxmltools", {}),
    (
        "lightgbm .txt",
        S / "diabetes_lightgbm.txt",
        S / "diabetes_sample.npy",
        "lightgbm, onnxmltools",
        {},
    ),
]

PROBE = """
import json, os, sys, time, tempfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import {imports}
import mserve.converters.export, mserve.runtime
mserve.runtime.max_opset()
t1 = time.perf_counter()
from mserve import export
repo = tempfile.mkdtemp()
export({source!r}, name="m", repo=repo, sample={sample!r}, **{options!r})
t2 = time.perf_counter()
export({source!r}, name="m", repo=repo, sample={sample!r}, **{options!r})
t3 = time.perf_counter()
print(json.dumps({{"imports": t1 - t0, "first": t2 - t1, "warm": t3 - t2}}))
"""


def main() -> None:
    args = start(__doc__ or "", runs=3)
    print(
        f"{'sample':24} {'imports':>9} {'1st export':>11} {'warm':>9} {'mserve export (wall)':>21}"
    )
    for label, source, sample, imports, options in CASES:
        probe = PROBE.format(
            imports=imports, source=str(source), sample=str(sample), options=options
        )
        out = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
            cwd=ROOT,
        )
        phases = json.loads(out.stdout.strip().splitlines()[-1])
        with tempfile.TemporaryDirectory() as repo:
            command = [
                MSERVE,
                "export",
                str(source),
                "--name",
                "m",
                "--repo",
                repo,
                "--sample",
                str(sample),
                "--json",
            ]
            if options.get("trust_source"):
                command.append("--trust-source")
            walls = timed(command, args.runs, cwd=ROOT)
        print(
            f"{label:24} {phases['imports']:8.2f}s {phases['first']:10.3f}s "
            f"{phases['warm']:8.3f}s {statistics.median(walls):12.2f}s (n={len(walls)})"
        )


if __name__ == "__main__":
    main()
