"""`mserve serve` checks its ports before it loads a model."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def serve(repo: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mserve", "serve", str(repo), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_taken_http_port_is_one_line_and_exit_3_before_any_model_loads(
    published_iris: Path, taken_port: int
) -> None:
    result = serve(published_iris, "--port", taken_port, "--grpc-port", 0)
    assert result.returncode == 3, result.stderr
    assert result.stderr == f"mserve: error: port {taken_port} on 127.0.0.1 is in use\n"


def test_a_taken_grpc_port_too(published_iris: Path, taken_port: int) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        http_port = free.getsockname()[1]
    result = serve(published_iris, "--port", http_port, "--grpc-port", taken_port)
    assert result.returncode == 3, result.stderr
    assert result.stderr == f"mserve: error: gRPC port {taken_port} on 127.0.0.1 is in use\n"


def test_a_port_out_of_range_is_a_usage_error(published_iris: Path) -> None:
    result = serve(published_iris, "--port", 70000)
    assert result.returncode == 2 and "ports are 1 to 65535" in result.stderr
