"""TensorFlow SavedModels and Keras 3 models (files and in-process)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import mserve
from mserve.errors import InputError, UsageError

from ..conftest import SAMPLES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

TWO_INPUTS = {"measures": (None, 4), "ratios": (None, 2)}
TWO_OUTPUTS = {"petal_area": (None, 1), "species": (None, 3)}
SAMPLE = SAMPLES / "iris_two_inputs_sample.npz"


def shapes(specs: tuple) -> dict[str, tuple]:
    return {t.name: t.shape for t in specs}


@pytest.mark.parametrize("source", ["iris_two_inputs.keras", "iris_two_inputs_savedmodel"])
def test_keras_files_and_savedmodels_keep_their_names(repo: Path, source: str) -> None:
    result = mserve.export(SAMPLES / source, name="k", repo=repo, sample=SAMPLE)
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
        )


def test_tensorflow_needs_a_sample_with_every_input(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="TensorFlow models need --sample"):
        mserve.export(SAMPLES / "iris_two_inputs.keras", name="k", repo=repo)
    np.savez(tmp_path / "half.npz", measures=np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="missing input 'ratios'"):
        mserve.export(
            SAMPLES / "iris_two_inputs.keras", name="k", repo=repo, sample=tmp_path / "half.npz"
        )
    assert not repo.exists()


def test_a_broken_keras_file_is_one_line(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot load broken.keras with Keras"):
        mserve.export(tmp_path / "broken.keras", name="k", repo=repo, sample=SAMPLE)
