from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from mserve.converters import registry
from mserve.converters.sklearn import SklearnConverter
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KernelDensity

import mserve
from mserve.errors import (
    ConversionError,
    MissingExtraError,
    ParityError,
    UntrustedSourceError,
    UsageError,
    ValidationError,
)
from mserve.parity import Tolerance
from mserve.repository import LocalRepository


def test_classifier_exports_tensor_outputs_with_parity_on_probabilities(
    repo: Path, iris_pipeline: Any, iris_data: Any
) -> None:
    result = mserve.export(iris_pipeline, name="iris", repo=repo, sample=iris_data[0][::10])
    assert (result.version, result.path) == (1, repo / "iris" / "1")
    manifest = LocalRepository(repo).manifest("iris", 1)
    assert [(t.name, t.dtype, t.shape) for t in manifest.signature.outputs] == [
        ("label", "int64", (None,)),
        ("probabilities", "float32", (None, 3)),
    ]
    assert manifest.parity["passed"] and manifest.parity["rows"] == 15
    assert set(manifest.parity["outputs"]) == {"label", "probabilities"}
    assert manifest.parity["outputs"]["probabilities"]["max_abs_diff"] < 1e-5
    assert manifest.source["framework"] == "scikit-learn"
    assert manifest.source["converter"] == "skl2onnx"
    assert manifest.onnx["opset"]["ai.onnx"] >= 13
    assert manifest.runtime["onnxruntime"] != "unknown"
    assert sorted(manifest.files) == ["model.onnx", "samples/inputs.npz", "samples/outputs.npz"]


def test_regressor_from_a_file_with_an_npy_sample(
    repo: Path, tmp_path: Path, diabetes_forest: Any
) -> None:
    import joblib

    model, x = diabetes_forest
    source, sample = tmp_path / "forest.joblib", tmp_path / "sample.npy"
    joblib.dump(model, source)
    np.save(sample, x[:20])
    result = mserve.export(source, name="diabetes", repo=repo, sample=sample, trust_source=True)
    manifest = result.manifest
    assert manifest.parity["outputs"]["variable"]["mismatches"] == 0
    assert manifest.source["file"] == "forest.joblib" and len(manifest.source["sha256"]) == 64
    assert manifest.signature.inputs[0].shape == (None, 10)


def test_no_sample_checks_parity_on_synthetic_rows_and_says_so(
    repo: Path, iris_pipeline: Any
) -> None:
    result = mserve.export(iris_pipeline, name="iris", repo=repo)
    assert result.manifest.parity["synthetic_sample"] is True
    assert any("synthetic" in note for note in result.notes)


def test_float64_samples_fix_a_double_input(repo: Path, iris_pipeline: Any, iris_data: Any) -> None:
    result = mserve.export(
        iris_pipeline, name="iris", repo=repo, sample=iris_data[0][:5].astype(np.float64)
    )
    assert result.manifest.signature.inputs[0].dtype == "float64"


def test_pickles_are_refused_without_trust_and_nothing_is_written(
    repo: Path, iris_joblib: Path, tmp_path: Path
) -> None:
    with pytest.raises(UntrustedSourceError, match="pass --trust-source"):
        mserve.export(iris_joblib, name="iris", repo=repo)
    renamed = tmp_path / "innocent.bin"  # the name does not matter: loading it runs code
    renamed.write_bytes(iris_joblib.read_bytes())
    with pytest.raises(UntrustedSourceError, match="pass --trust-source"):
        mserve.export(renamed, name="iris", repo=repo, framework="sklearn")
    assert not repo.exists()


class PerturbingConverter(SklearnConverter):
    """The real skl2onnx conversion, then one weight changed: a conversion bug on purpose."""

    name = "perturbed"

    def convert(self, model: Any, sample: Any, options: Any) -> Any:
        conversion = super().convert(model, sample, options)
        for node in conversion.model.graph.node:
            for attribute in node.attribute:
                if attribute.name == "coefficients":
                    attribute.floats[0] += 0.05
        return conversion


def test_a_broken_conversion_fails_parity_and_publishes_nothing(
    repo: Path, iris_pipeline: Any, iris_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "converters", lambda: {"perturbed": PerturbingConverter()})
    with pytest.raises(
        ParityError, match=r"output 'probabilities' disagrees: max abs diff .* at \["
    ) as caught:
        mserve.export(
            iris_pipeline, name="iris", repo=repo, sample=iris_data[0][:10], framework="perturbed"
        )
    assert "nothing published" in str(caught.value)
    assert not repo.exists()


def test_tolerances_can_be_loosened_per_output(
    repo: Path, iris_pipeline: Any, iris_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "converters", lambda: {"perturbed": PerturbingConverter()})
    loose = Tolerance(per_output={"probabilities": (1.0, None)})
    sample = iris_data[0][:10]  # clear setosa rows: the change moves probabilities, not labels
    result = mserve.export(
        iris_pipeline, name="iris", repo=repo, sample=sample, framework="perturbed", tolerance=loose
    )
    assert result.manifest.parity["outputs"]["probabilities"]["atol"] == 1.0


def test_unfitted_and_unsupported_estimators_name_themselves(repo: Path) -> None:
    with pytest.raises(ConversionError, match="the LogisticRegression is not fitted"):
        mserve.export(LogisticRegression(), name="m", repo=repo)
    kde = KernelDensity().fit(np.random.default_rng(0).normal(size=(10, 2)))
    with pytest.raises(ConversionError, match="skl2onnx cannot convert this KernelDensity"):
        mserve.export(kde, name="m", repo=repo)


def test_unknown_objects_and_frameworks_are_usage_errors(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no converter accepts objects of type dict"):
        mserve.export({}, name="m", repo=repo)
    with pytest.raises(UsageError, match="unknown framework 'caffe'"):
        mserve.export(tmp_path, name="m", repo=repo, framework="caffe")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match="cannot tell which framework model.bin comes from"):
        mserve.export(tmp_path / "model.bin", name="m", repo=repo)
    with pytest.raises(UsageError, match="invalid model name"):
        mserve.export(tmp_path / "model.bin", name="../m", repo=repo)


def test_a_pickle_of_something_else_is_refused(repo: Path, tmp_path: Path) -> None:
    import joblib

    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(UsageError, match="holds a dict, not a scikit-learn model"):
        mserve.export(tmp_path / "dict.joblib", name="m", repo=repo, trust_source=True)


def test_ci_provenance_is_recorded(
    repo: Path, iris_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    result = mserve.export(iris_pipeline, name="iris", repo=repo)
    assert result.manifest.provenance == {
        "ci": "github-actions",
        "git_commit": "abc123",
        "ci_job_id": "42",
        "ci_job_url": "https://github.com/acme/models/actions/runs/42",
    }
    on_disk = json.loads((result.path / "manifest.json").read_text())
    assert on_disk["provenance"]["git_commit"] == "abc123"


# -- ONNX files as the source ----------------------------------------------------------------


def scale_model(weight_location: str | None = None, folder: Path | None = None) -> onnx.ModelProto:
    """y = x * w, with w stored inline or as external data at ``weight_location``."""
    weight = numpy_helper.from_array(np.array([2.0, 3.0], dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if weight_location is not None:
        assert folder is not None
        data = folder / weight_location
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(np.array([2.0, 3.0], dtype=np.float32).tobytes())
        point_at_external_data(model, weight_location)
    return model


def point_at_external_data(model: onnx.ModelProto, location: str) -> None:
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location


def test_onnx_files_are_copied_with_their_external_data_inlined(repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    onnx.save(scale_model("weights/w.bin", source), source / "scale.onnx")
    sample = tmp_path / "x.json"
    sample.write_text("[[1, 1], [2, 2]]")
    result = mserve.export(source / "scale.onnx", name="scale", repo=repo, sample=sample)
    assert result.manifest.parity == {"passed": True, "method": "none: the source is ONNX"}
    published = onnx.load(result.path / "model.onnx")
    assert numpy_helper.to_array(published.graph.initializer[0]).tolist() == [2.0, 3.0]
    with np.load(result.path / "samples" / "outputs.npz") as outputs:
        assert outputs["y"].tolist() == [[2.0, 3.0], [4.0, 6.0]]


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "link/w.bin"])
def test_external_data_outside_the_folder_is_refused(
    repo: Path, tmp_path: Path, location: str
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.zeros(2, dtype=np.float32).tobytes())
    (source / "link").symlink_to(tmp_path)  # a symlinked folder leading out
    (tmp_path / "w.bin").write_bytes(np.zeros(2, dtype=np.float32).tobytes())
    model = scale_model()
    point_at_external_data(model, location)
    onnx.save(model, source / "m.onnx")
    with pytest.raises(ValidationError, match="outside the model's folder|a symbolic link"):
        mserve.export(source / "m.onnx", name="m", repo=repo)
    assert not repo.exists()


def test_a_corrupt_onnx_file_is_refused(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises((ValidationError, ConversionError)):
        mserve.export(tmp_path / "bad.onnx", name="m", repo=repo)
    assert not repo.exists()


def test_a_missing_framework_answers_with_the_install_command() -> None:
    with pytest.raises(MissingExtraError) as caught:
        registry.require("no_such_framework.module", "torch")
    assert str(caught.value) == (
        "no_such_framework is not installed; install it with: pip install 'mserve[torch]'"
    )
