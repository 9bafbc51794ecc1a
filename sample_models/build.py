"""Rebuild the sample models deterministically: ``python sample_models/build.py``.

Each sample is a small trained model plus a sample input for its parity check:
- iris_classifier.joblib  scikit-learn pipeline (StandardScaler + LogisticRegression), 4 features
- iris_classifier.onnx    the same pipeline already in ONNX (the ONNX-file source path)
- iris_sample.csv         10 iris rows with a header
- diabetes_regressor.joblib  RandomForestRegressor (10 trees, depth 4), 10 features
- diabetes_sample.npy     10 diabetes rows, float32
The data sets ship inside scikit-learn; nothing is downloaded.
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


if __name__ == "__main__":
    build_iris()
    build_diabetes()
    for path in sorted(HERE.iterdir()):
        if path.suffix != ".py" and path.is_file():
            print(f"{path.name:32} {path.stat().st_size:>8} bytes")
