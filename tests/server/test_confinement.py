"""A real `mserve serve` opens a version's files only through the confined, verified opener:
a hard link out of the repository or tampered weights mark the version failed, and no byte of
them ever reaches a client."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np

from ..conftest import Server, publish_with_external_data, record_files, wait_until

ZEROS = {"instances": [[0.0, 0.0, 0.0, 0.0]]}


def _predict(server: Server, suffix: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/ext{suffix}:predict", json=ZEROS, timeout=10)


def test_external_data_hard_linked_out_of_the_repository_is_never_served(
    repo: Path, tmp_path: Path
) -> None:
    publish_with_external_data(repo, "ext", [1, 2, 3, 4])  # ext:1, sound
    linked = publish_with_external_data(repo, "ext", [5, 6, 7, 8])  # ext:2
    outside = tmp_path / "outside-secret.bin"
    outside.write_bytes(np.array([111, 222, 333, 444], np.float32).tobytes())
    (linked / "model.onnx.data").unlink()
    os.link(outside, linked / "model.onnx.data")
    record_files(linked)  # the manifest rewritten to match: the hard link alone must be refused

    server = Server(repo, "--version-policy", "all")
    try:
        good = _predict(server, "/versions/1")
        assert good.status_code == 200 and good.json()["predictions"] == [[1, 2, 3, 4]]
        linked_answer = _predict(server, "/versions/2")
        assert linked_answer.status_code in (404, 503), linked_answer.text
        assert "111" not in linked_answer.text and "error" in linked_answer.json()
        # A request without a version goes to the newest that loaded: ext:1.
        assert _predict(server, "").json()["predictions"] == [[1, 2, 3, 4]]
        status = httpx.get(f"{server.url}/v1/models/ext", timeout=10).json()
        states = {s["version"]: s for s in status["model_version_status"]}
        assert states["2"]["state"] == "END"
        assert "hard links" in states["2"]["status"]["error_message"]
        assert str(tmp_path) not in str(status)
        assert wait_until(lambda: "ext:2" in server.stderr())
    finally:
        assert server.stop() == 0


def test_tampered_external_data_is_refused_at_load(repo: Path) -> None:
    version = publish_with_external_data(repo, "ext", [1, 2, 3, 4])
    weights = version / "model.onnx.data"
    published = weights.read_bytes()
    weights.write_bytes(np.full(4, 555, np.float32).tobytes())
    server = Server(repo, "--version-policy", "all")
    try:
        answer = _predict(server, "/versions/1")
        assert answer.status_code in (404, 503) and "555" not in answer.text
        status = httpx.get(f"{server.url}/v1/models/ext/versions/1", timeout=10).json()
        error = status["model_version_status"][0]["status"]["error_message"]
        assert "model.onnx.data does not match the sha256 in its manifest" in error
        # Put right (only the data file changes): the version is tried again and served.
        weights.write_bytes(published)
        assert wait_until(lambda: _predict(server, "/versions/1").status_code == 200)
    finally:
        assert server.stop() == 0
