"""XGBoost and LightGBM: native model files, and their estimators inside scikit-learn pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mserve
from mserve.errors import InputError, UsageError

from ..conftest import SAMPLES

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")


def train_xgboost(objective: str, x: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    return xgboost.train(
        {"objective": objective, "max_depth": 3, "nthread": 1, **params},
        xgboost.DMatrix(x, label=y),
        num_boost_round=8,
    )


def train_lightgbm(objective: str, x: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    return lightgbm.train(
        {"objective": objective, "verbose": -1, "num_threads": 1, **params},
        lightgbm.Dataset(x, y),
        num_boost_round=8,
    )


@pytest.mark.parametrize(
    ("file", "train", "objective", "params", "outputs"),
    [
        (
            "multi.json",
            train_xgboost,
            "multi:softprob",
            {"num_class": 3},
            ["label", "probabilities"],
        ),
        ("multi.ubj", train_xgboost, "multi:softmax", {"num_class": 3}, ["label", "probabilities"]),
        ("binary.json", train_xgboost, "binary:logistic", {}, ["label", "probabilities"]),
        ("reg.json", train_xgboost, "reg:squarederror", {}, ["variable"]),
        ("multi.txt", train_lightgbm, "multiclass", {"num_class": 3}, ["label", "probabilities"]),
        ("binary.txt", train_lightgbm, "binary", {}, ["label", "probabilities"]),
        ("reg.txt", train_lightgbm, "regression", {}, ["variable"]),
    ],
)
def test_native_boosters(
    repo: Path,
    tmp_path: Path,
    iris_data: Any,
    file: str,
    train: Any,
    objective: str,
    params: dict,
    outputs: list[str],
) -> None:
    x, y = iris_data
    target = (y == 1).astype(int) if objective.startswith("binary") else y
    booster = train(objective, x, target, **params)
    booster.save_model(str(tmp_path / file))
    result = mserve.export(tmp_path / file, name="b", repo=repo, sample=x[::7])
    manifest = result.manifest
    assert [t.name for t in manifest.signature.outputs] == outputs
    assert manifest.signature.inputs[0].shape == (None, 4)
    assert manifest.parity["passed"], manifest.parity
    framework = "xgboost" if train is train_xgboost else "lightgbm"
    assert (
        manifest.source["framework"] == framework and manifest.source["converter"] == "onnxmltools"
    )
    if objective == "multi:softmax":
        assert set(manifest.parity["outputs"]) == {"label"}
        assert any("multi:softmax predicts labels" in note for note in result.notes)


def test_the_committed_samples(repo: Path) -> None:
    xgb = mserve.export(
        SAMPLES / "iris_xgboost.json", name="x", repo=repo, sample=SAMPLES / "iris_sample.csv"
    )
    lgb = mserve.export(
        SAMPLES / "diabetes_lightgbm.txt",
        name="l",
        repo=repo,
        sample=SAMPLES / "diabetes_sample.npy",
    )
    assert xgb.manifest.parity["passed"] and lgb.manifest.parity["passed"]


@pytest.mark.parametrize(
    "estimator",
    [
        lambda: xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1),
        lambda: xgboost.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1),
        lambda: lightgbm.LGBMClassifier(n_estimators=8, verbose=-1, n_jobs=1),
        lambda: lightgbm.LGBMRegressor(n_estimators=8, verbose=-1, n_jobs=1),
    ],
)
def test_wrappers_inside_scikit_learn_pipelines(repo: Path, iris_data: Any, estimator: Any) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris_data
    pipeline = make_pipeline(StandardScaler(), estimator()).fit(x, y)
    result = mserve.export(pipeline, name="p", repo=repo, sample=x[::10])
    assert result.manifest.parity["passed"], result.manifest.parity
    assert result.manifest.source["converter"] == "skl2onnx"


def test_a_sample_with_the_wrong_width(repo: Path, tmp_path: Path, iris_data: Any) -> None:
    x, y = iris_data
    train_xgboost("multi:softprob", x, y, num_class=3).save_model(str(tmp_path / "m.json"))
    with pytest.raises(InputError, match="the sample has 3 columns; the model takes 4"):
        mserve.export(tmp_path / "m.json", name="b", repo=repo, sample=np.zeros((2, 3), np.float32))


def test_a_json_file_that_is_not_a_booster_is_not_guessed(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"layers": []}')
    with pytest.raises(UsageError, match="cannot tell which framework config.json comes from"):
        mserve.export(tmp_path / "config.json", name="b", repo=repo)
