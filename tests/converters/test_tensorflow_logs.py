"""TensorFlow's log lines stay off a real export's stderr unless the user asks for them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import SAMPLES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("source", ["iris_two_inputs.keras", "iris_two_inputs_savedmodel"])
def test_a_tensorflow_export_prints_no_log_lines(tmp_path: Path, source: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run(
        [sys.executable, "-m", "mserve", "export", str(SAMPLES / source), "-n", "m",
         "--repo", str(tmp_path), "--trust-source",
         "--sample", str(SAMPLES / "iris_two_inputs_sample.npz")],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Published m:1" in result.stdout
