"""What every benchmark script shares: its command line, the line saying where it ran, and
starting a server process."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path


def start(doc: str, runs: int) -> argparse.Namespace:
    """Parse ``--runs`` and print the date, machine and Python the figures belong to."""
    parser = argparse.ArgumentParser(description=doc.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=runs)
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    return args


def timed(
    command: list[str], runs: int, cwd: Path | None = None, env: dict[str, str] | None = None
) -> list[float]:
    """Wall time of ``runs`` fresh processes of ``command``."""
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, timeout=600, cwd=cwd, env=env)
        times.append(time.perf_counter() - begin)
    return times


def launch(
    command: list[str], ready_url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a server process and wait (60 s at most) until READY_URL answers 200. Its stderr
    goes to LOG (a real file, as in production), else nowhere."""
    import httpx

    stderr = log.open("ab") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command[0]} did not start")
