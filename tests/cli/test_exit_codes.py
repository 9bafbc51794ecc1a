"""One rule per kind of failure, the same for every command (see mserve.errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import Cli


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "nosuch", "--input", "[[1, 2, 3, 4]]"],
        ["show", "nosuch"],
        ["validate", "nosuch"],
        ["bench", "nosuch", "--iterations", "1"],
        ["promote", "nosuch", "1"],
        ["rollback", "nosuch"],
        ["retire", "nosuch", "1"],
        ["promote", "iris", "9"],
        ["predict", "iris:9", "--input", "[[1, 2, 3, 4]]"],
    ],
)
def test_an_unknown_model_or_version_exits_2_from_every_command(
    cli: Cli, published_iris: Path, args: list[str]
) -> None:
    if args[0] in {"promote", "rollback", "retire"}:
        args = [*args, "--repo", str(published_iris), "--actor", "test"]
    result = cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "not found" in result.stderr or "no version 9" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
