"""The commands through CliRunner: outputs, --json shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..conftest import SAMPLES, Cli, one_line_error


def test_export_prints_parity_and_the_new_version(
    cli: Cli, iris_joblib: Path, iris_sample_npy: Path
) -> None:
    result = cli(
        "export", iris_joblib, "--name", "iris", "--trust-source", "--sample", iris_sample_npy
    )
    assert result.exit_code == 0, result.stderr
    assert "Published iris:1" in result.stdout
    assert "probabilities" in result.stdout


def test_export_json(cli: Cli, iris_joblib: Path, iris_sample_npy: Path) -> None:
    result = cli(
        "export",
        iris_joblib,
        "-n",
        "iris",
        "--trust-source",
        "--sample",
        iris_sample_npy,
        "--atol",
        "1e-3",
        "--rtol",
        "probabilities=0.01",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"model", "version", "path", "parity", "notes"}
    assert (data["model"], data["version"]) == ("iris", 1)
    assert data["parity"]["passed"] is True
    assert data["parity"]["outputs"]["probabilities"]["atol"] == 1e-3
    assert data["parity"]["outputs"]["probabilities"]["rtol"] == 0.01
    assert data["parity"]["outputs"]["label"]["rtol"] == 1e-3


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--name", "iris"], 2, "pass --trust-source only if you trust"),
        (["--name", "Bad/Name", "--trust-source"], 2, "invalid model name 'Bad/Name'"),
        (["--name", "iris", "--trust-source", "--atol", "x"], 2, "--atol 'x': expected a number"),
        (["--name", "iris", "--trust-source", "--atol", "-1"], 2, "must be zero or positive"),
        (["--name", "iris", "--trust-source", "--sample", "nope.npy"], 2, "does not exist"),
        (["--name", "iris", "--trust-source", "--framework", "caffe"], 2, "unknown framework"),
        (["--trust-source"], 2, "Missing option '--name'"),
    ],
)
def test_export_usage_errors(
    cli: Cli, iris_joblib: Path, args: list[str], code: int, fragment: str
) -> None:
    one_line_error(cli("export", iris_joblib, *args), code, fragment)
    assert not cli.repo.exists()


def test_errors_are_json_too_with_json(cli: Cli, iris_joblib: Path) -> None:
    result = cli("export", iris_joblib, "--name", "iris", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": json.loads(result.stdout)["error"]}
    assert "--trust-source" in json.loads(result.stdout)["error"]


def test_missing_source_file(cli: Cli, tmp_path: Path) -> None:
    one_line_error(cli("export", tmp_path / "none.onnx", "-n", "m"), 2, "does not exist")


def test_validate_list_show_predict_round_trip(cli: Cli, published_iris: Path) -> None:
    validated = cli("validate", "iris", "--json")
    assert validated.exit_code == 0, validated.stderr
    assert json.loads(validated.stdout)["passed"] is True

    listed = json.loads(cli("list", "--json").stdout)
    assert listed == [{"name": "iris", "versions": [1], "labels": {}, "retired": [], "problem": ""}]

    shown = json.loads(cli("show", "iris:1", "--json").stdout)
    assert shown["signature"]["inputs"] == [{"name": "X", "dtype": "float32", "shape": [None, 4]}]
    assert shown["labels"] == []

    predicted = cli("predict", "iris", "--input", "[5.1, 3.5, 1.4, 0.2]", "--json")
    assert predicted.exit_code == 0, predicted.stderr
    data = json.loads(predicted.stdout)
    assert (data["model"], data["version"], data["outputs"]["label"]) == ("iris", 1, [0])
    assert np.isclose(sum(data["outputs"]["probabilities"][0]), 1.0, atol=1e-5)


def test_human_output_names_what_matters(cli: Cli, published_iris: Path) -> None:
    assert "1" in cli("list").stdout and "iris" in cli("list").stdout
    shown = cli("show", "iris").stdout
    assert "probabilities" in shown and "[?, 4]" in shown and "scikit-learn" in shown
    validated = cli("validate", "iris:1").stdout
    assert "shape inference" in validated and "FAIL" not in validated
    predicted = cli("predict", "iris", "-i", "[[5.1, 3.5, 1.4, 0.2]]").stdout
    assert "label" in predicted and "[0]" in predicted


def test_predict_from_files(cli: Cli, published_iris: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", X=np.array([[6.7, 3.0, 5.2, 2.3]], dtype=np.float32))
    result = cli("predict", "iris", "--input", f"@{tmp_path / 'x.npz'}", "--json")
    assert json.loads(result.stdout)["outputs"]["label"] == [2]
    csv_result = cli("predict", "iris", "--input", f"@{SAMPLES / 'iris_sample.csv'}", "--json")
    assert json.loads(csv_result.stdout)["outputs"]["label"] == [0, 0, 1, 1, 2, 2, 0, 1, 2, 2]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[1, 2, 3]", "expects [?, 4], got [1, 3] (dimension 1 must be 4)"),
        ('{"Y": [[1, 2, 3, 4]]}', "unknown input 'Y'; the model takes 'X'"),
        ('[["a", "b", "c", "d"]]', "expects float32 values, got strings"),
        ("[[1, 2], [3]]", "is not a rectangular array"),
        ("[1, 2", "--input is not valid JSON"),
    ],
)
def test_predict_bad_input_exits_1(
    cli: Cli, published_iris: Path, value: str, fragment: str
) -> None:
    one_line_error(cli("predict", "iris", "--input", value), 1, fragment)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["show", "nope"], 2, "model 'nope' not found"),
        (["show", "iris:9"], 2, "has no version 9"),
        (["validate", "iris@stable"], 2, "has no label 'stable'"),
        (["predict", "iris:0", "-i", "[]"], 2, "invalid version '0'"),
        (["validate", "iris", "--against", "iris:5"], 2, "has no version 5"),
    ],
)
def test_bad_references(
    cli: Cli, published_iris: Path, args: list[str], code: int, fragment: str
) -> None:
    one_line_error(cli(*args), code, fragment)


def test_validate_exit_1_on_a_corrupt_version(cli: Cli, published_iris: Path) -> None:
    (published_iris / "iris" / "1" / "model.onnx").write_bytes(b"junk")
    result = cli("validate", "iris", "--json")
    assert result.exit_code == 1
    failed = [c["name"] for c in json.loads(result.stdout)["checks"] if not c["passed"]]
    assert "files" in failed


def test_validate_against_a_breaking_version_exits_1(
    cli: Cli, published_iris: Path, iris_data: Any
) -> None:
    from sklearn.linear_model import LogisticRegression

    import mserve

    x, y = iris_data
    mserve.export(
        LogisticRegression(max_iter=300).fit(x[:, :2], y), name="iris", repo=published_iris
    )
    result = cli("validate", "iris:2", "--against", "iris:1")
    assert result.exit_code == 1
    assert "BREAKING" in result.stdout and "dimension 1: 4 -> 2" in result.stdout


def test_an_empty_or_missing_repository(cli: Cli) -> None:
    one_line_error(cli("list"), 2, "does not exist")


def test_repo_option_beats_the_environment(cli: Cli, published_iris: Path, tmp_path: Path) -> None:
    result = cli("list", "--json", "--repo", str(published_iris))
    assert json.loads(result.stdout)[0]["name"] == "iris"
    one_line_error(cli("list", "--repo", str(tmp_path / "elsewhere")), 2, "does not exist")


def test_unknown_command_and_option_are_usage_errors(cli: Cli) -> None:
    one_line_error(cli("frobnicate"), 2, "No such command")
    one_line_error(cli("list", "--bogus"), 2, "No such option")


def test_version_and_help(cli: Cli) -> None:
    assert cli("--version").stdout.startswith("mserve ")
    help_text = cli("--help").stdout
    for command in ("export", "validate", "list", "show", "predict"):
        assert command in help_text
