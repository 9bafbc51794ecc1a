"""`mserve export` edges a new user found: options, samples and source files that do not fit."""

from __future__ import annotations

from pathlib import Path

from ..conftest import Cli
from ..test_cli import one_line_error


def test_a_tolerance_for_an_output_the_model_lacks_is_refused(
    cli: Cli, iris_joblib: Path, iris_sample_npy: Path, repo: Path
) -> None:
    for option in ("--atol", "--rtol"):
        result = cli(
            "export", iris_joblib, "-n", "iris", "--trust-source", "--sample", iris_sample_npy,
            option, "probabilites=1e-3",
        )  # fmt: skip
        one_line_error(result, 2, f"{option} names output 'probabilites'")
        assert "its outputs: label, probabilities" in result.stderr
    assert not (repo / "iris").exists()
