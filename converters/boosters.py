"""Native XGBoost and LightGBM boosters, converted with onnxmltools.

Model files are data, safe to load: XGBoost ``.json``/``.ubj`` (``Booster.save_model``) and
LightGBM ``.txt`` (``Booster.save_model``). Their scikit-learn wrappers (``XGBClassifier``,
``LGBMRegressor``...) inside pipelines go through the scikit-learn converter instead.
Classifiers export ``label`` and ``probabilities``; parity compares both with the booster's own
predictions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mserve.errors import ConversionError, InputError, UsageError, foreign_message
from mserve.inputs import Table, check_sample

from .registry import Conversion, package_version, quiet, require

SYNTHETIC_ROWS = 32


class _BoosterConverter:
    name: str
    distribution: str

    def runs_code(self, path: Path) -> str:
        return ""  # JSON/UBJ and text tree dumps: data, and trees only compare and add

    def accepts(self, obj: Any) -> bool:
        cls = type(obj)
        return cls.__module__.startswith(f"{self.name}.") and cls.__name__ == "Booster"

    def convert(self, model: Any, sample: Any, options: Mapping[str, Any]) -> Conversion:
        import numpy as np

        require(self.name, self.name)
        require("onnxmltools", self.name, minimum="1.12")
        from onnxmltools.convert.common.data_types import FloatTensorType

        features = self.features(model)
        matrix = _matrix(sample, features)
        try:
            with quiet():
                onnx_model = self.to_onnx(model, [("input", FloatTensorType([None, features]))])
        except Exception as exc:  # onnxmltools names the unsupported objective or parameter
            raise ConversionError(
                f"onnxmltools cannot convert this booster: {foreign_message(exc)}"
            ) from None
        _unfix_batch_axis(onnx_model)
        outputs = [o.name for o in onnx_model.graph.output]
        with quiet():
            predictions = np.asarray(self.predict(model, matrix))
        return Conversion(
            model=onnx_model,
            feeds={"input": matrix},
            expected=_expected(predictions, outputs, self.predicts_labels(model)),
            source={
                "framework": self.name,
                "framework_version": package_version(self.distribution),
                "converter": "onnxmltools",
                "converter_version": package_version("onnxmltools"),
                "objective": self.objective(model),
            },
            synthetic_sample=sample is None,
            notes=(
                ["probabilities not compared: multi:softmax predicts labels only"]
                if self.predicts_labels(model)
                else []
            ),
        )

    # Each framework fills these in.
    def features(self, model: Any) -> int:
        raise NotImplementedError

    def objective(self, model: Any) -> str:
        raise NotImplementedError

    def predicts_labels(self, model: Any) -> bool:
        return False

    def to_onnx(self, model: Any, initial_types: list[Any]) -> Any:
        raise NotImplementedError

    def predict(self, model: Any, matrix: Any) -> Any:
        raise NotImplementedError


class XGBoostConverter(_BoosterConverter):
    name = "xgboost"
    distribution = "xgboost"

    def detect(self, path: Path) -> bool:
        suffix = path.suffix.lower()
        if suffix == ".ubj":
            return True
        return suffix == ".json" and path.is_file() and '"learner"' in _head(path)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        xgboost = require("xgboost", "xgboost")
        booster = xgboost.Booster()
        try:
            booster.load_model(str(path))
        except Exception as exc:  # XGBoostError
            raise UsageError(
                f"{path.name} is not an XGBoost model: {foreign_message(exc)}"
            ) from None
        return booster, []

    def features(self, model: Any) -> int:
        return int(model.num_features())

    def objective(self, model: Any) -> str:
        return str(json.loads(model.save_config())["learner"]["objective"]["name"])

    def predicts_labels(self, model: Any) -> bool:
        return self.objective(model) == "multi:softmax"

    def to_onnx(self, model: Any, initial_types: list[Any]) -> Any:
        from onnxmltools import convert_xgboost

        model = model.copy()
        model.feature_names = None  # onnxmltools only understands the default f0, f1, ...
        return convert_xgboost(model, initial_types=initial_types)

    def predict(self, model: Any, matrix: Any) -> Any:
        import xgboost

        return model.predict(xgboost.DMatrix(matrix))


class LightGBMConverter(_BoosterConverter):
    name = "lightgbm"
    distribution = "lightgbm"

    def detect(self, path: Path) -> bool:
        return path.suffix.lower() == ".txt" and path.is_file() and _head(path).startswith("tree")

    def load(self, path: Path) -> tuple[Any, list[str]]:
        lightgbm = require("lightgbm", "lightgbm")
        try:
            with quiet():
                return lightgbm.Booster(model_file=str(path)), []
        except Exception as exc:  # LightGBMError
            raise UsageError(
                f"{path.name} is not a LightGBM model: {foreign_message(exc)}"
            ) from None

    def features(self, model: Any) -> int:
        return int(model.num_feature())

    def objective(self, model: Any) -> str:
        return str(model.dump_model(num_iteration=0).get("objective", "unknown"))

    def to_onnx(self, model: Any, initial_types: list[Any]) -> Any:
        from onnxmltools import convert_lightgbm

        return convert_lightgbm(model, initial_types=initial_types, zipmap=False)

    def predict(self, model: Any, matrix: Any) -> Any:
        return model.predict(matrix)


def _head(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(4096).decode("utf-8", errors="replace")


def _matrix(sample: Any, features: int) -> Any:
    import numpy as np

    if sample is None:
        return np.random.default_rng(0).normal(size=(SYNTHETIC_ROWS, features)).astype(np.float32)
    if isinstance(sample, Table):
        sample = sample.matrix()
    elif isinstance(sample, dict):
        if len(sample) != 1:
            raise InputError("a booster takes one matrix; give one array as sample")
        sample = next(iter(sample.values()))
    matrix = np.asarray(sample, dtype=np.float32)
    check_sample({"input": [None, features]}, {"input": matrix})
    return matrix.reshape(1, -1) if matrix.ndim == 1 else matrix


def _expected(predictions: Any, outputs: list[str], labels_only: bool) -> dict[str, Any]:
    import numpy as np

    if "probabilities" not in outputs:
        return {outputs[0]: predictions}
    if labels_only:  # multi:softmax predicts class indices, not probabilities
        return {outputs[0]: predictions.astype(np.int64)}
    probabilities = (
        predictions if predictions.ndim == 2 else np.stack([1 - predictions, predictions], axis=1)
    )
    return {outputs[0]: probabilities.argmax(axis=1), "probabilities": probabilities}


def _unfix_batch_axis(model: Any) -> None:
    """onnxmltools declares some outputs with a batch of 1 (LightGBM's label): make it variable."""
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].ClearField("dim_value")


xgboost_converter = XGBoostConverter()
lightgbm_converter = LightGBMConverter()
