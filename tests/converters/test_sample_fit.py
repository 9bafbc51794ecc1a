"""A sample of the wrong width: one wording and exit 1 from every framework."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..conftest import SAMPLES, Cli, one_line_error


@pytest.fixture
def three_columns(tmp_path: Path) -> Path:
    lines = (SAMPLES / "iris_sample.csv").read_text().splitlines()
    path = tmp_path / "three.csv"
    path.write_text("\n".join(",".join(line.split(",")[:3]) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("source", "takes"),
    [
        ("iris_classifier.joblib", 4),
        ("iris_classifier.onnx", 4),
        ("iris_mlp.pt2", 4),
        ("iris_xgboost.json", 4),
        ("diabetes_lightgbm.txt", 10),
    ],
)
def test_every_framework_names_the_columns_the_model_takes(
    cli: Cli, three_columns: Path, source: str, takes: int
) -> None:
    result = cli("export", SAMPLES / source, "-n", "m", "--trust-source", "--sample", three_columns)
    one_line_error(result, 1, f"the sample has 3 columns; the model takes {takes}")


@pytest.mark.parametrize("source", ["iris_two_inputs.keras", "iris_two_inputs_savedmodel"])
def test_tensorflow_names_the_input_too(cli: Cli, tmp_path: Path, source: str) -> None:
    with np.load(SAMPLES / "iris_two_inputs_sample.npz") as stored:
        sample = {name: stored[name] for name in stored.files}
    sample["measures"] = sample["measures"][:, :3]
    np.savez(tmp_path / "bad.npz", **sample)
    result = cli(
        "export", SAMPLES / source, "-n", "m", "--trust-source", "--sample", tmp_path / "bad.npz"
    )
    one_line_error(result, 1, "the sample's input 'measures' has 3 columns; the model takes 4")


@pytest.mark.parametrize(
    "args",
    [
        [SAMPLES / "iris_mlp_torchscript.pt", "--trust-source"],
        ["--from-python", "sample_models.torch_mlp:build"],
    ],
)
def test_a_torch_module_without_declared_shapes_fails_on_the_sample_with_exit_1(
    cli: Cli, three_columns: Path, args: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(SAMPLES.parent)
    result = cli("export", *args, "-n", "m", "--sample", three_columns)
    one_line_error(
        result, 1, "the model fails on the sample: mat1 and mat2 shapes cannot be multiplied"
    )
