from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mserve
from mserve.repository import LocalRepository
from mserve.validation import validate

from .conftest import publish_with_external_data, record_files


def checks(report: Any) -> dict[str, bool]:
    return {c.name: c.passed for c in report.checks}


def test_a_fresh_export_passes_every_check(published_iris: Path) -> None:
    report = validate(LocalRepository(published_iris), "iris", 1)
    assert checks(report) == {
        "manifest": True,
        "files": True,
        "external data": True,
        "onnx checker": True,
        "shape inference": True,
        "onnxruntime session": True,
        "tensor types": True,
        "signature": True,
        "samples": True,
    }
    assert report.passed and report.to_dict()["valid"]


def test_a_bfloat16_model_fails_with_the_reason(published_iris: Path) -> None:
    """onnxruntime's Python API cannot run it: validate says so, rather than every request
    failing later."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["y"])],
        "bf16",
        [helper.make_tensor_value_info("X", TensorProto.BFLOAT16, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, published_iris / "iris" / "1" / "model.onnx")
    record_files(published_iris / "iris" / "1")  # a sound file: only its types are wrong
    report = validate(LocalRepository(published_iris), "iris", 1)
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "bfloat16" in failed["tensor types"] and "cast it to float32" in failed["tensor types"]
    assert not report.passed


def test_a_modified_model_fails_integrity_and_loading(published_iris: Path) -> None:
    model = published_iris / "iris" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    report = validate(LocalRepository(published_iris), "iris", 1)
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert failed["files"] == "model.onnx was modified (sha256 differs)"
    assert "external data" in failed
    assert not report.passed


def test_an_unlisted_file_and_a_missing_file_are_named(published_iris: Path) -> None:
    version = published_iris / "iris" / "1"
    (version / "extra.bin").write_bytes(b"x")
    (version / "samples" / "outputs.npz").unlink()
    report = validate(LocalRepository(published_iris), "iris", 1)
    detail = next(c.detail for c in report.checks if c.name == "files")
    assert detail == "samples/outputs.npz is missing; extra.bin is not in the manifest"


def test_stored_samples_are_rerun(published_iris: Path) -> None:
    outputs = published_iris / "iris" / "1" / "samples" / "outputs.npz"
    with np.load(outputs) as f:
        data = {k: f[k] for k in f.files}
    data["probabilities"] = data["probabilities"] + 0.01
    np.savez(outputs, **data)
    report = validate(LocalRepository(published_iris), "iris", 1)
    detail = next(c.detail for c in report.checks if c.name == "samples")
    assert detail.startswith("stored samples: output 'probabilities' disagrees: max abs diff 0.01")


def test_a_manifest_naming_another_version_fails(published_iris: Path) -> None:
    path = published_iris / "iris" / "1" / "manifest.json"
    path.write_text(path.read_text().replace('"version": 1', '"version": 7'))
    report = validate(LocalRepository(published_iris), "iris", 1)
    assert [c.detail for c in report.checks if c.name == "manifest"] == [
        "manifest names iris:7, not iris:1"
    ]


@pytest.mark.parametrize(("features", "compatible"), [(4, True), (3, False)])
def test_against_reports_breaking_changes(
    published_iris: Path, iris_data: Any, features: int, compatible: bool
) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = iris_data
    model = LogisticRegression(max_iter=300).fit(x[:, :features], y)
    mserve.export(model, name="iris", repo=published_iris, sample=x[:5, :features])
    report = validate(LocalRepository(published_iris), "iris", 2, against=("iris", 1))
    assert report.compatibility is not None
    assert report.compatibility.compatible is compatible
    assert report.passed is compatible
    if not compatible:
        assert [c.message for c in report.compatibility.breaking] == ["dimension 1: 4 -> 3"]


# -- every file confined and checked against the manifest -----------------------------------


def test_a_manifest_that_is_a_symlink_out_of_the_repository_fails(
    published_iris: Path, tmp_path: Path
) -> None:
    manifest = published_iris / "iris" / "1" / "manifest.json"
    outside = tmp_path / "manifest-elsewhere.json"
    outside.write_bytes(manifest.read_bytes())
    manifest.unlink()
    manifest.symlink_to(outside)
    report = validate(LocalRepository(published_iris), "iris", 1)
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "symbolic link" in failed["manifest"] and not report.passed
    assert str(tmp_path) not in str(report.to_dict())


def test_a_version_with_external_data_passes(repo: Path) -> None:
    publish_with_external_data(repo, "ext", [1, 2, 3, 4])
    report = validate(LocalRepository(repo), "ext", 1)
    assert report.passed, report.to_dict()


def test_tampered_external_data_fails(repo: Path) -> None:
    version = publish_with_external_data(repo, "ext", [1, 2, 3, 4])
    (version / "model.onnx.data").write_bytes(np.full(4, 9, np.float32).tobytes())
    report = validate(LocalRepository(repo), "ext", 1)
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert failed["files"] == "model.onnx.data was modified (sha256 differs)"
    assert "model.onnx.data does not match the sha256" in failed["external data"]
    assert "onnxruntime session" not in {c.name for c in report.checks}  # never loaded
    assert not report.passed


def test_external_data_hard_linked_to_an_outside_file_fails(repo: Path, tmp_path: Path) -> None:
    version = publish_with_external_data(repo, "ext", [1, 2, 3, 4])
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.full(4, 9, np.float32).tobytes())
    (version / "model.onnx.data").unlink()
    os.link(outside, version / "model.onnx.data")
    record_files(version)  # even with the manifest rewritten to match
    report = validate(LocalRepository(repo), "ext", 1)
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "hard links" in failed["external data"] and not report.passed
