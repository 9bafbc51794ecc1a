"""Every change to a read-only repository is one line and exit 3, and changes nothing. The
folder is made read-only with chmod; as root, the commands run without the capability that lets
root ignore permission bits (see ``permissions_enforced``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import SAMPLES, make_read_only, make_writable, permissions_enforced

READ_ONLY = "the model repository is read-only: cannot change 'iris' (permission denied)"


@pytest.fixture
def read_only_repo(repo3: Path) -> Iterator[Path]:
    make_read_only(repo3)
    yield repo3
    make_writable(repo3)  # so the temporary folder can be removed


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "args",
    [
        ["promote", "iris", "2"],
        ["retire", "iris", "1"],
        ["rollback", "iris"],
        ["export", str(SAMPLES / "iris_classifier.onnx"), "--name", "iris"],
    ],
)
def test_a_change_to_a_read_only_repository_is_one_line(
    read_only_repo: Path, args: list[str]
) -> None:
    before = snapshot(read_only_repo)
    result = subprocess.run(
        [*permissions_enforced(), sys.executable, "-m", "mserve", *args, "--repo", read_only_repo],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mserve: error: "), result.stderr
    assert lines[0].endswith(READ_ONLY)
    assert snapshot(read_only_repo) == before
