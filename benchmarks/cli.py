"""CLI timings: ``mserve --help`` cold start and export of the iris sample.

    python benchmarks/cli.py [--runs N]

Every figure is wall time of a fresh process, so it includes interpreter start-up and imports,
which is what a CI job pays. Baselines measured in the same run: ``python -c pass`` (the floor
any Python CLI pays) and ``python -c "import typer"`` (the CLI framework alone).
Target (issue 2): ``mserve --help`` median under 0.3 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import start, timed

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
MSERVE = str(Path(sys.executable).with_name("mserve"))


def row(label: str, times: list[float], floor: float | None = None) -> str:
    median = statistics.median(times)
    ratio = f"{median / floor:5.2f}x" if floor else "     "
    return (
        f"{label:44} median {median * 1000:7.1f} ms  min {min(times) * 1000:7.1f} ms  "
        f"max {max(times) * 1000:7.1f} ms  {ratio}  (n={len(times)})"
    )


def main() -> None:
    args = start(__doc__ or "", runs=20)
    python = timed([sys.executable, "-c", "pass"], args.runs)
    floor = statistics.median(python)
    print(row("python -c pass (floor)", python))
    print(
        row(
            'python -c "import typer"',
            timed([sys.executable, "-c", "import typer"], args.runs),
            floor,
        )
    )
    print(row("mserve --help", timed([MSERVE, "--help"], args.runs), floor))
    print(row("mserve --version", timed([MSERVE, "--version"], args.runs), floor))
    with tempfile.TemporaryDirectory() as repo:
        env = {**os.environ, "MSERVE_REPO": repo}
        export = [
            MSERVE,
            "export",
            str(SAMPLES / "iris_classifier.joblib"),
            "--name",
            "iris",
            "--trust-source",
            "--sample",
            str(SAMPLES / "iris_sample.csv"),
            "--json",
        ]
        runs = max(3, args.runs // 4)
        print(row("mserve export iris (sklearn, CSV sample)", timed(export, runs, env=env), floor))
        onnx_export = [
            MSERVE,
            "export",
            str(SAMPLES / "iris_classifier.onnx"),
            "--name",
            "iris",
            "--json",
        ]
        print(row("mserve export iris (ONNX file)", timed(onnx_export, runs, env=env), floor))
        validate = [MSERVE, "validate", "iris:1", "--json"]
        print(row("mserve validate iris:1", timed(validate, runs, env=env), floor))
        predict = [MSERVE, "predict", "iris", "--input", "[[5.1, 3.5, 1.4, 0.2]]", "--json"]
        print(row("mserve predict iris (one row)", timed(predict, runs, env=env), floor))


if __name__ == "__main__":
    main()
