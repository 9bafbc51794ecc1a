"""Rebuild the sample models deterministically: ``make samples`` (needs ``mserve[all]``).

Each sample is a small trained model plus a sample input for its parity check:
- iris_classifier.joblib     scikit-learn pipeline (StandardScaler + LogisticRegression), 4 features
- iris_classifier.onnx       the same pipeline already in ONNX (the ONNX-file source path)
- iris_sample.csv            10 iris rows with a header
- diabetes_regressor.joblib  RandomForestRegressor (10 trees, depth 4), 10 features
- diabetes_sample.npy        10 diabetes rows, float32
- churn_pipeline.joblib      ColumnTransformer over numbers and strings + gradient boosting
- churn_sample.csv           20 rows of its four named columns (two numeric, two text)
- iris_mlp.pt2               PyTorch MLP (torch_mlp.py) saved by torch.export, dynamic batch
- iris_mlp_torchscript.pt    the same MLP as TorchScript (traced), returning probabilities only
- iris_mlp_state_dict.pt     its weights, for --from-python sample_models.torch_mlp:build
- iris_two_inputs.keras      Keras 3 model, inputs "measures" and "ratios", outputs "species"
                             and "petal_area"; iris_two_inputs_savedmodel/ is its SavedModel
- iris_two_inputs_sample.npz a sample for both
- iris_xgboost.json          XGBoost booster (multi:softprob), 4 features
- diabetes_lightgbm.txt      LightGBM booster (regression), 10 features
The data sets ship inside scikit-learn; nothing is downloaded. Every run trains the same models
(same weights, same predictions); the TorchScript, Keras and SavedModel archives also carry
metadata (zip timestamps, a fingerprint) that differs from run to run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import joblib
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
SAMPLE_ROWS = [0, 1, 50, 51, 100, 101, 25, 75, 125, 149]


def build_iris() -> None:
    iris = load_iris()
    x = iris.data.astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=0))
    model.fit(x, iris.target)
    joblib.dump(model, HERE / "iris_classifier.joblib")
    onnx_model = to_onnx(model, x[:1], options={"zipmap": False})
    (HERE / "iris_classifier.onnx").write_bytes(onnx_model.SerializeToString())
    columns = [name.replace(" (cm)", "").replace(" ", "_") for name in iris.feature_names]
    with (HERE / "iris_sample.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[f"{v:g}" for v in x[i]] for i in SAMPLE_ROWS])


def build_diabetes() -> None:
    diabetes = load_diabetes()
    x = diabetes.data.astype(np.float32)
    model = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0)
    model.fit(x, diabetes.target)
    joblib.dump(model, HERE / "diabetes_regressor.joblib")
    np.save(HERE / "diabetes_sample.npy", x[:10])


def build_churn() -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    rows = 400
    frame = pd.DataFrame(
        {
            "tenure_months": rng.integers(1, 72, rows).astype(np.float32),
            "monthly_charge": rng.normal(60, 20, rows).round(2).astype(np.float32),
            "contract": rng.choice(["monthly", "yearly", "two-year"], rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
        }
    )
    churned = (frame.tenure_months < 12) & (frame.contract == "monthly") | (
        frame.monthly_charge > 95
    )
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), ["tenure_months", "monthly_charge"]),
                        ("text", OneHotEncoder(handle_unknown="ignore"), ["contract", "region"]),
                    ]
                ),
            ),
            ("boosting", GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)),
        ]
    ).fit(frame, churned.astype(int))
    joblib.dump(model, HERE / "churn_pipeline.joblib")
    frame[:20].to_csv(HERE / "churn_sample.csv", index=False, float_format="%g")


def build_torch() -> None:
    import sys

    import torch

    sys.path.insert(0, str(HERE.parent))
    from sample_models.torch_mlp import IrisMLP, Probabilities

    torch.manual_seed(0)
    torch.set_num_threads(1)
    iris = load_iris()
    x = torch.tensor(iris.data, dtype=torch.float32)
    y = torch.tensor(iris.target)
    model = IrisMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x)["logits"], y).backward()
        optimizer.step()
    model.eval()
    torch.save(model.state_dict(), HERE / "iris_mlp_state_dict.pt")
    torch.jit.save(torch.jit.trace(Probabilities(model), x[:8]), HERE / "iris_mlp_torchscript.pt")
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x[:8],), dynamic_shapes={"features": {0: batch}})
    torch.export.save(program, HERE / "iris_mlp.pt2")


def build_keras() -> None:
    import os
    import shutil

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    iris = load_iris()
    measures = iris.data.astype(np.float32)
    ratios = np.stack([measures[:, 0] / measures[:, 1], measures[:, 2] / measures[:, 3]], axis=1)
    measures_in = keras.Input(shape=(4,), name="measures")
    ratios_in = keras.Input(shape=(2,), name="ratios")
    hidden = keras.layers.Dense(16, activation="relu")(
        keras.layers.Concatenate()([keras.layers.Normalization(axis=-1)(measures_in), ratios_in])
    )
    model = keras.Model(
        [measures_in, ratios_in],
        {
            "species": keras.layers.Dense(3, activation="softmax", name="species")(hidden),
            "petal_area": keras.layers.Dense(1, name="petal_area")(hidden),
        },
    )
    model.compile(
        optimizer="adam",
        loss={"species": "sparse_categorical_crossentropy", "petal_area": "mse"},
    )
    area = (measures[:, 2] * measures[:, 3]).reshape(-1, 1)
    model.fit(
        [measures, ratios], {"species": iris.target, "petal_area": area}, epochs=200, verbose=0
    )
    model.save(HERE / "iris_two_inputs.keras")
    saved = HERE / "iris_two_inputs_savedmodel"
    shutil.rmtree(saved, ignore_errors=True)
    model.export(str(saved), format="tf_saved_model", verbose=False)
    np.savez(
        HERE / "iris_two_inputs_sample.npz",
        measures=measures[SAMPLE_ROWS],
        ratios=ratios[SAMPLE_ROWS],
    )


def build_boosters() -> None:
    import lightgbm
    import xgboost

    iris = load_iris()
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "seed": 0, "nthread": 1},
        xgboost.DMatrix(iris.data.astype(np.float32), label=iris.target),
        num_boost_round=20,
    )
    booster.save_model(HERE / "iris_xgboost.json")
    diabetes = load_diabetes()
    regressor = lightgbm.train(
        {"objective": "regression", "num_leaves": 8, "seed": 0, "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(diabetes.data.astype(np.float32), diabetes.target),
        num_boost_round=20,
    )
    regressor.save_model(str(HERE / "diabetes_lightgbm.txt"))


if __name__ == "__main__":
    build_iris()
    build_diabetes()
    build_churn()
    build_torch()
    build_keras()
    build_boosters()
    for path in sorted(HERE.iterdir()):
        if path.suffix not in {".py", ".sh"}:
            size = (
                sum(p.stat().st_size for p in path.rglob("*"))
                if path.is_dir()
                else path.stat().st_size
            )
            print(f"{path.name:32} {size:>8} bytes")
