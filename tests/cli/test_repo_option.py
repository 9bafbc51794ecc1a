"""--repo (and MSERVE_REPO, and serve's REPO argument) pointing at a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mserve.errors import UsageError
from mserve.repository import LocalRepository

from ..conftest import SAMPLES, Cli, one_line_error

COMMANDS = [
    ["export", SAMPLES / "iris_classifier.onnx", "--name", "iris"],
    ["validate", "iris"],
    ["list"],
    ["show", "iris"],
    ["predict", "iris", "--input", "[[1, 2, 3, 4]]"],
    ["bench", "iris", "--iterations", "1"],
    ["serve", "--grpc-port", "0"],
    ["promote", "iris", "1", "--actor", "test"],
    ["rollback", "iris", "--actor", "test"],
    ["retire", "iris", "1", "--actor", "test"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: str(args[0]))
def test_every_command_says_a_repo_that_is_a_file_is_not_a_directory(
    cli: Cli, tmp_path: Path, args: list[str]
) -> None:
    afile = tmp_path / "models.txt"
    afile.write_text("not a repository")
    result = cli(*args, "--repo", afile, repo=False)
    one_line_error(result, 2, f"--repo {afile} is not a directory")


def test_serve_says_it_of_its_repo_argument_and_of_mserve_repo(cli: Cli, tmp_path: Path) -> None:
    afile = tmp_path / "models.txt"
    afile.write_text("")
    one_line_error(cli("serve", afile), 2, f"--repo {afile} is not a directory")
    cli.repo = afile
    one_line_error(cli("list"), 2, f"--repo {afile} is not a directory")


def test_the_repository_refuses_a_file_as_its_root(tmp_path: Path) -> None:
    afile = tmp_path / "models.txt"
    afile.write_text("")
    with pytest.raises(UsageError, match="is not a directory"):
        LocalRepository(afile).models()
    with (
        pytest.raises(UsageError, match="is not a directory"),
        LocalRepository(afile).locked("iris"),
    ):
        pass
