"""A missing optional framework answers with the exact install command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import SAMPLES, Cli


@pytest.mark.parametrize(
    ("source", "module", "extra"),
    [
        ("iris_xgboost.json", "xgboost", "xgboost"),
        ("diabetes_lightgbm.txt", "lightgbm", "lightgbm"),
        ("iris_mlp.pt2", "torch", "torch"),
        ("iris_two_inputs.keras", "tensorflow", "tensorflow"),
        ("iris_classifier.joblib", "skl2onnx", "sklearn"),
    ],
)
def test_missing_extra(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, source: str, module: str, extra: str
) -> None:
    # Every extra is installed here; a None entry in sys.modules makes its import fail as if not.
    monkeypatch.setitem(sys.modules, module, None)
    result = cli(
        "export",
        SAMPLES / source,
        "-n",
        "m",
        "--trust-source",
        "--sample",
        SAMPLES / "iris_sample.csv",
    )
    assert result.exit_code == 3, result.stderr
    assert result.stderr.strip() == (
        f"mserve: error: {module} is not installed; install it with: pip install 'mserve[{extra}]'"
    )
    assert not Path(cli.repo).exists()
