"""TensorFlow SavedModels and Keras 3 models (files and in-process)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mserve
from mserve.errors import InputError, UsageError

from ..conftest import SAMPLES, Cli, one_line_error

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

TWO_INPUTS = {"measures": (None, 4), "ratios": (None, 2)}
TWO_OUTPUTS = {"petal_area": (None, 1), "species": (None, 3)}
SAMPLE = SAMPLES / "iris_two_inputs_sample.npz"


def shapes(specs: tuple) -> dict[str, tuple]:
    return {t.name: t.shape for t in specs}


@pytest.mark.parametrize("source", ["iris_two_inputs.keras", "iris_two_inputs_savedmodel"])
def test_keras_files_and_savedmodels_keep_their_names(repo: Path, source: str) -> None:
    result = mserve.export(SAMPLES / source, name="k", repo=repo, sample=SAMPLE, trust_source=True)
    manifest = result.manifest
    assert shapes(manifest.signature.inputs) == TWO_INPUTS
    assert shapes(manifest.signature.outputs) == TWO_OUTPUTS
    assert manifest.parity["passed"] and manifest.parity["rows"] == 10
    assert manifest.source["converter"] == "tf2onnx"
    assert manifest.source["signature"] == "serving_default"
    assert manifest.source["framework"] == ("keras" if source.endswith(".keras") else "tensorflow")


def test_an_in_process_keras_model(repo: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(3,), name="pixels"), keras.layers.Dense(2)])
    sample = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    result = mserve.export(model, name="seq", repo=repo, sample=sample)
    assert shapes(result.manifest.signature.inputs) == {"pixels": (None, 3)}
    assert [t.name for t in result.manifest.signature.outputs] == ["output_0"]
    assert result.manifest.parity["outputs"]["output_0"]["max_abs_diff"] < 1e-5


def test_an_unknown_signature_lists_the_real_ones(repo: Path) -> None:
    with pytest.raises(
        UsageError, match=r"no signature 'predict' \(it has: serve, serving_default\)"
    ):
        mserve.export(
            SAMPLES / "iris_two_inputs_savedmodel",
            name="k",
            repo=repo,
            sample=SAMPLE,
            signature="predict",
            trust_source=True,
        )


def test_tensorflow_needs_a_sample_with_every_input(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="TensorFlow models need --sample"):
        mserve.export(SAMPLES / "iris_two_inputs.keras", name="k", repo=repo, trust_source=True)
    np.savez(tmp_path / "half.npz", measures=np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="missing input 'ratios'"):
        mserve.export(
            SAMPLES / "iris_two_inputs.keras",
            name="k",
            repo=repo,
            sample=tmp_path / "half.npz",
            trust_source=True,
        )
    assert not repo.exists()


def test_a_broken_keras_file_is_one_line(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot load broken.keras with Keras"):
        mserve.export(
            tmp_path / "broken.keras", name="k", repo=repo, sample=SAMPLE, trust_source=True
        )


def marker_writing_savedmodel(tmp_path: Path, marker: Path) -> Path:
    """A SavedModel whose serving graph writes ``marker`` (tf.io.write_file) when it runs."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            tf.io.write_file(str(marker), "written by the model's graph")
            return {"y": x * 2.0}

    module = Writer()
    path = tmp_path / "writer_savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_a_savedmodel_graph_runs_nothing_without_trust(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "written-by-graph"
    source = marker_writing_savedmodel(tmp_path, marker)
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    result = cli("export", source, "-n", "w", "--sample", tmp_path / "x.npy")
    one_line_error(result, 2, "graph ops can read and write files")
    assert not marker.exists()
    # Its graph really does write the file when run: only the refusal kept it from running.
    cli("export", source, "-n", "w", "--trust-source", "--sample", tmp_path / "x.npy")
    assert marker.exists()


def test_a_keras_file_needs_trust(cli: Cli) -> None:
    result = cli("export", SAMPLES / "iris_two_inputs.keras", "-n", "k", "--sample", SAMPLE)
    one_line_error(result, 2, "safe mode does not stop custom layers' code")
