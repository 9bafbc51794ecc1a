"""scikit-learn estimators and pipelines, converted with skl2onnx.

- Classifiers are exported with tensor outputs (``label``, ``probabilities``), not ZipMap's list of
  dictionaries, so every runtime and protocol can carry them; parity compares both.
- A model fitted on named columns (a pandas DataFrame, e.g. a ColumnTransformer over numbers and
  strings) gets one ONNX input per column, named after it, shape ``[N, 1]``; string columns are
  string tensors. Its sample must name the columns (a CSV with a header, or a DataFrame).
- XGBoost and LightGBM estimators inside pipelines convert through onnxmltools.
"""

from __future__ import annotations

import pickle
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mserve.errors import ConversionError, InputError, UsageError, foreign_message
from mserve.inputs import Table, check_sample
from mserve.runtime import max_opset

from .registry import Conversion, package_version, quiet, require

SYNTHETIC_ROWS = 32
# What the unpickler itself raises on bytes that are not a (complete) pickle.
_DAMAGED = (pickle.UnpicklingError, EOFError, IndexError, struct.error)


class SklearnConverter:
    name = "sklearn"
    suffixes = (".joblib", ".pkl", ".pickle")

    def runs_code(self, path: Path) -> str:
        # joblib and pickle files execute code when loaded, whatever their name
        return "loading a pickle runs code stored in it"

    def detect(self, path: Path) -> bool:
        return path.suffix.lower() in self.suffixes

    def accepts(self, obj: Any) -> bool:
        return any(c.__module__.startswith("sklearn.") for c in type(obj).__mro__)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        joblib = require("joblib", "sklearn")
        require("sklearn", "sklearn", "scikit-learn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = joblib.load(path)
            except ModuleNotFoundError as exc:
                raise UsageError(
                    f"{path.name} needs module {exc.name!r}, which is not installed"
                ) from None
            except _DAMAGED as exc:  # the bytes are no pickle: say so, not "pop from empty list"
                raise UsageError(
                    f"cannot read {path.name} as a joblib/pickle file: it is damaged or not a "
                    f"pickle ({type(exc).__name__}: {foreign_message(exc)})"
                ) from None
            except Exception as exc:  # a pickle's own code can fail in any way it chooses
                raise UsageError(
                    f"cannot read {path.name} as a joblib/pickle file: {foreign_message(exc)}"
                ) from None
        if not self.accepts(model):
            raise UsageError(
                f"{path.name} holds a {type(model).__qualname__}, not a scikit-learn model"
            )
        # e.g. "pickled with scikit-learn 1.5, loaded with 1.6": worth showing, not fatal.
        return model, [
            str(w.message).splitlines()[0] for w in caught if "version" in str(w.message)
        ]

    def convert(self, model: Any, sample: Any, options: Mapping[str, Any]) -> Conversion:
        skl2onnx = require("skl2onnx", "sklearn", minimum="1.17")
        from sklearn.base import is_classifier
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            raise ConversionError(f"the {type(model).__name__} is not fitted") from None
        _register_booster_wrappers(model)
        synthetic = sample is None
        columns = _column_names(model)
        source_sample = _sample_frame(sample, columns) if columns else _sample_matrix(model, sample)
        features = getattr(model, "n_features_in_", None)
        if not columns and features is not None:  # before skl2onnx, whose message is obscure
            check_sample({"X": [None, int(features)]}, {"X": source_sample})
        converter_options = {"zipmap": False} if is_classifier(model) else None
        try:
            with quiet():
                onnx_model = skl2onnx.to_onnx(
                    model,
                    source_sample[:1],
                    options=converter_options,
                    target_opset=_target_opset(),
                )
        except Exception as exc:  # skl2onnx raises RuntimeError, NameError, TypeError, ...
            raise ConversionError(
                f"skl2onnx cannot convert this {type(model).__name__}: {foreign_message(exc)}"
            ) from None
        feeds = _feeds(onnx_model, source_sample, columns)
        outputs = [o.name for o in onnx_model.graph.output]
        with quiet():
            expected, skipped = _reference_outputs(
                model, source_sample, outputs, is_classifier(model)
            )
        return Conversion(
            model=onnx_model,
            feeds=feeds,
            expected=expected,
            source={
                "framework": "scikit-learn",
                "framework_version": package_version("scikit-learn"),
                "converter": "skl2onnx",
                "converter_version": package_version("skl2onnx"),
                "estimator": type(model).__name__,
            },
            synthetic_sample=synthetic,
            notes=[
                f"output {name!r} has no scikit-learn counterpart; not compared" for name in skipped
            ],
        )


def _target_opset() -> dict[str, int]:
    from skl2onnx import get_latest_tested_opset_version

    return {"": min(get_latest_tested_opset_version(), max_opset()), "ai.onnx.ml": 3}


def _column_names(model: Any) -> list[str] | None:
    """The columns a model was fitted on, if it was fitted on a DataFrame."""
    names = getattr(model, "feature_names_in_", None)
    if names is None or not all(isinstance(n, str) for n in names):
        return None
    return [str(n) for n in names]


def _sample_frame(sample: Any, columns: list[str]) -> Any:
    pandas = require("pandas", "sklearn")
    if sample is None:
        raise UsageError(
            f"the model takes named columns ({', '.join(columns)}); pass --sample with them "
            "(a CSV with a header row)"
        )
    if not isinstance(sample, Table | dict):
        raise InputError(
            f"the model takes named columns ({', '.join(columns)}); the sample has none"
        )
    data = sample.columns if isinstance(sample, Table) else sample
    missing = [c for c in columns if c not in data]
    if missing:
        raise InputError(f"the sample has no column {', '.join(map(repr, missing))}")
    return pandas.DataFrame({c: _flat(data[c]) for c in columns})


def _flat(values: Any) -> Any:
    import numpy as np

    array = np.asarray(values)
    return array.reshape(-1) if array.ndim == 2 and array.shape[1] == 1 else array


def _sample_matrix(model: Any, sample: Any) -> Any:
    import numpy as np

    if sample is None:
        features = getattr(model, "n_features_in_", None)
        if features is None:
            raise UsageError("cannot tell how many features the model takes; pass --sample")
        return (
            np.random.default_rng(0).normal(size=(SYNTHETIC_ROWS, int(features))).astype(np.float32)
        )
    if isinstance(sample, Table):
        return sample.matrix()
    if isinstance(sample, dict):
        if len(sample) != 1:
            raise InputError("this scikit-learn model takes one matrix; give one array as sample")
        sample = next(iter(sample.values()))
    array = np.asarray(sample)
    return array.reshape(1, -1) if array.ndim == 1 else array


def _feeds(onnx_model: Any, sample: Any, columns: list[str] | None) -> dict[str, Any]:
    """The sample as the ONNX model's inputs: one [N, 1] array per column, or the matrix."""
    if not columns:
        return {onnx_model.graph.input[0].name: sample}
    feeds = {}
    for name in columns:
        values = sample[name].to_numpy()
        feeds[name] = (values.astype(str) if values.dtype == object else values).reshape(-1, 1)
    return feeds


def _reference_outputs(
    model: Any, sample: Any, outputs: list[str], classifier: bool
) -> tuple[dict[str, Any], list[str]]:
    """The source model's answers, keyed by the ONNX output each one corresponds to."""
    if classifier:
        methods = ["predict", "predict_proba" if hasattr(model, "predict_proba") else ""]
    elif hasattr(model, "predict"):
        methods = ["predict", "transform" if hasattr(model, "transform") else ""]
    else:
        methods = ["transform"]
    expected = {}
    for name, method in zip(outputs, methods, strict=False):
        if method:
            expected[name] = getattr(model, method)(sample)
    return expected, [name for name in outputs if name not in expected]


def _register_booster_wrappers(model: Any) -> None:
    """Teach skl2onnx the XGBoost/LightGBM estimators a pipeline contains (via onnxmltools)."""
    modules = {type(model).__module__.split(".")[0]}
    if hasattr(model, "get_params"):
        modules |= {type(v).__module__.split(".")[0] for v in model.get_params(deep=True).values()}
    if "xgboost" in modules:
        _register("xgboost", ("XGBClassifier", "XGBRegressor"), "XGBoost", "convert_xgboost")
    if "lightgbm" in modules:
        _register("lightgbm", ("LGBMClassifier", "LGBMRegressor"), "LightGbm", "convert_lightgbm")


def _register(package: str, classes: tuple[str, str], converter_module: str, function: str) -> None:
    import importlib

    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    framework = require(package, package)
    require("onnxmltools", package)
    module = importlib.import_module(
        f"onnxmltools.convert.{package}.operator_converters.{converter_module}"
    )
    convert = getattr(module, function)
    classifier, regressor = (getattr(framework, name) for name in classes)
    update_registered_converter(
        classifier,
        f"{converter_module}{classes[0]}",
        calculate_linear_classifier_output_shapes,
        convert,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        regressor,
        f"{converter_module}{classes[1]}",
        calculate_linear_regressor_output_shapes,
        convert,
    )


converter = SklearnConverter()
