"""`mserve export` edges a new user found: options, samples and source files that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Cli, one_line_error


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


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"0.", "IndexError: pop from empty list"),  # a POP on an empty stack
        (b"", "EOFError"),
        (b"hello world\n", "UnpicklingError"),
        (b"\x80\x04\x95\x00", "error: unpack requires"),
    ],
)
def test_an_unreadable_pickle_says_so_in_one_line(
    cli: Cli, tmp_path: Path, content: bytes, reason: str
) -> None:
    source = tmp_path / "model.joblib"
    source.write_bytes(content)
    result = cli("export", source, "-n", "m", "--trust-source")
    one_line_error(
        result, 2, "cannot read model.joblib as a joblib/pickle file: it is damaged or not a pickle"
    )
    assert reason in result.stderr
