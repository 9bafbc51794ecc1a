"""The README is part of the product: its commands run and its reference is current."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .cli_reference import END, START, render
from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_cli_reference_is_current() -> None:
    current = README.split(START, 1)[1].split(END, 1)[0].strip()
    assert current == render().strip(), "the CLI reference is stale: run `make docs`"


def test_every_option_has_help() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    assert rows and all(not line.rstrip().endswith("|  |") for line in rows), rows


def test_the_two_setup_commands_are_make_targets() -> None:
    setup = README.split("## Set-up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", setup, flags=re.M)
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for command in commands:
        assert re.search(rf"^{command.split()[1]}:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    block = README.split("<!-- quickstart:start -->", 1)[1].split("<!-- quickstart:end -->", 1)[0]
    commands = [line for line in block.splitlines() if line.startswith("mserve ")]
    assert len(commands) >= 5
    env = {
        **os.environ,
        "MSERVE_REPO": str(tmp_path / "models"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for command in commands:
        # The README's --repo is ./models; here it is the test's own folder, like MSERVE_REPO.
        argv = [env["MSERVE_REPO"] if a == "models" else a for a in shlex.split(command)]
        result = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (command, result.stderr)
