"""Ctrl-C during `mserve export` in a real process: one line, exit 130, nothing published."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mserve.repository import STAGING_PREFIX, LocalRepository
from mserve.validation import validate

from ..conftest import SAMPLES

pytestmark = pytest.mark.slow


def start_export(*args: object, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mserve", "export", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def test_ctrl_c_while_the_model_is_built_says_interrupted_and_exits_130(tmp_path: Path) -> None:
    marker = tmp_path / "building"
    (tmp_path / "slow_factory.py").write_text(
        "import pathlib, time\n"
        "def build():\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(60)\n"
    )
    process = start_export(
        "--from-python", "slow_factory:build", "--framework", "torch", "-n", "m",
        "--repo", tmp_path / "models", cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (130, "mserve: error: interrupted\n")
    assert not (tmp_path / "models").exists()


def test_ctrl_c_at_any_moment_of_a_torch_export_leaves_no_version_and_no_staging(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "models"
    source, sample = SAMPLES / "iris_mlp.pt2", SAMPLES / "iris_sample.csv"
    outcomes = []
    # Imports (an interrupt inside one would abort a native library or leave numpy half
    # loaded), loading, conversion, parity, publishing, and after the end.
    for delay in (0.2, 0.4, 0.6, 1.5, 2.5, 3.5, 4.5):
        process = start_export(
            source, "-n", "iris", "--repo", repo, "--sample", sample, "--trust-source"
        )
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        outcomes.append(process.returncode)
        assert process.returncode in (0, 130), stderr
        if process.returncode == 130:
            assert stderr == "mserve: error: interrupted\n"
        if (repo / "iris").exists():
            names = [p.name for p in (repo / "iris").iterdir()]
            assert not [n for n in names if n.startswith(STAGING_PREFIX)], names
            for version in (int(n) for n in names if n.isdigit()):
                assert validate(LocalRepository(repo), "iris", version).passed
    assert 130 in outcomes, outcomes
