"""scikit-learn pipelines over named columns of numbers and strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mserve
from mserve.errors import InputError, UsageError

from ..conftest import SAMPLES, Cli

CHURN = SAMPLES / "churn_pipeline.joblib"
CHURN_SAMPLE = SAMPLES / "churn_sample.csv"
COLUMNS = {
    "tenure_months": "float32",
    "monthly_charge": "float32",
    "contract": "string",
    "region": "string",
}


def test_one_input_per_column_and_string_tensors(repo: Path) -> None:
    result = mserve.export(CHURN, name="churn", repo=repo, sample=CHURN_SAMPLE, trust_source=True)
    inputs = result.manifest.signature.inputs
    assert {t.name: t.dtype for t in inputs} == COLUMNS
    assert all(t.shape == (None, 1) for t in inputs)
    assert result.manifest.parity["passed"] and result.manifest.parity["rows"] == 20


def test_a_dataframe_sample_in_process(repo: Path) -> None:
    import joblib

    model = joblib.load(CHURN)
    frame = pd.read_csv(CHURN_SAMPLE).astype(
        {"tenure_months": "float32", "monthly_charge": "float32"}
    )
    result = mserve.export(model, name="churn", repo=repo, sample=frame)
    assert {t.name: t.dtype for t in result.manifest.signature.inputs} == COLUMNS


def test_strings_predict_through_the_cli(cli: Cli) -> None:
    assert (
        cli("export", CHURN, "-n", "churn", "--trust-source", "--sample", CHURN_SAMPLE).exit_code
        == 0
    )
    row = {
        "tenure_months": [[3]],
        "monthly_charge": [[80.5]],
        "contract": [["monthly"]],
        "region": [["north"]],
    }
    answer = json.loads(cli("predict", "churn", "--input", json.dumps(row), "--json").stdout)
    assert answer["outputs"]["label"] == [1]
    from_csv = json.loads(cli("predict", "churn", "--input", f"@{CHURN_SAMPLE}", "--json").stdout)
    assert len(from_csv["outputs"]["label"]) == 20
    wrong = cli("predict", "churn", "--input", json.dumps({**row, "contract": [[7]]}))
    assert wrong.exit_code == 1 and "input 'contract' expects strings" in wrong.stderr


def test_named_columns_need_a_named_sample(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="takes named columns .*pass --sample"):
        mserve.export(CHURN, name="c", repo=repo, trust_source=True)
    with pytest.raises(InputError, match="the sample has none"):
        mserve.export(CHURN, name="c", repo=repo, trust_source=True, sample=np.zeros((2, 4)))
    partial = tmp_path / "partial.csv"
    partial.write_text("tenure_months,monthly_charge,contract\n3,80,monthly\n")
    with pytest.raises(InputError, match="the sample has no column 'region'"):
        mserve.export(CHURN, name="c", repo=repo, trust_source=True, sample=partial)
    assert not repo.exists()


def test_forests_and_gradient_boosting_on_numbers(repo: Path, iris_data: Any) -> None:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    x, y = iris_data
    for model in (
        RandomForestClassifier(n_estimators=10, random_state=0),
        GradientBoostingClassifier(n_estimators=10, random_state=0),
    ):
        result = mserve.export(model.fit(x, y), name="trees", repo=repo, sample=x[::5])
        assert result.manifest.parity["passed"], result.manifest.parity
