"""scikit-learn estimators and pipelines, converted with skl2onnx.

Classifiers are exported with tensor outputs (``label``, ``probabilities``), not ZipMap's list of
dictionaries, so every runtime and protocol can carry them; parity compares both.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mserve.errors import ConversionError, UsageError

from .registry import Conversion, package_version, require

SYNTHETIC_ROWS = 32


class SklearnConverter:
    name = "sklearn"
    suffixes = (".joblib", ".pkl", ".pickle")

    def runs_code(self, path: Path) -> bool:
        return True  # joblib and pickle files execute code when loaded, whatever their name

    def detect(self, path: Path) -> bool:
        return path.suffix.lower() in self.suffixes

    def accepts(self, obj: Any) -> bool:
        return any(c.__module__.startswith("sklearn.") for c in type(obj).__mro__)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        joblib = require("joblib", "sklearn")
        require("sklearn", "sklearn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = joblib.load(path)
            except ModuleNotFoundError as exc:
                raise UsageError(
                    f"{path.name} needs module {exc.name!r}, which is not installed"
                ) from None
            except Exception as exc:  # a pickle can fail in any way its code chooses
                raise UsageError(f"cannot load {path.name}: {_first_line(exc)}") from None
        if not self.accepts(model):
            raise UsageError(
                f"{path.name} holds a {type(model).__qualname__}, not a scikit-learn model"
            )
        # e.g. "pickled with scikit-learn 1.5, loaded with 1.6": worth showing, not fatal.
        return model, [_first_line(w.message) for w in caught if "version" in str(w.message)]

    def convert(self, model: Any, sample: Any) -> Conversion:
        import numpy as np

        skl2onnx = require("skl2onnx", "sklearn")
        from sklearn.base import is_classifier
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(model)
        except NotFittedError:
            raise ConversionError(f"the {type(model).__name__} is not fitted") from None
        notes = []
        synthetic = sample is None
        if synthetic:
            sample = _synthetic_sample(model)
        if isinstance(sample, dict):
            if len(sample) != 1:
                raise UsageError(
                    "this scikit-learn model takes one matrix; give one array as sample"
                )
            sample = next(iter(sample.values()))
        sample = np.asarray(sample)
        if sample.ndim == 1:
            sample = sample.reshape(1, -1)
        options = {"zipmap": False} if is_classifier(model) else None
        try:
            onnx_model = skl2onnx.to_onnx(model, sample[:1], options=options)
        except Exception as exc:  # skl2onnx raises RuntimeError, NameError, TypeError, ...
            raise ConversionError(
                f"skl2onnx cannot convert this {type(model).__name__}: {_first_line(exc)}"
            ) from None
        input_name = onnx_model.graph.input[0].name
        outputs = [o.name for o in onnx_model.graph.output]
        expected, skipped = _reference_outputs(model, sample, outputs, is_classifier(model))
        notes += [
            f"output {name!r} has no scikit-learn counterpart; not compared" for name in skipped
        ]
        return Conversion(
            model=onnx_model,
            feeds={input_name: sample},
            expected=expected,
            source={
                "framework": "scikit-learn",
                "framework_version": package_version("scikit-learn"),
                "converter": "skl2onnx",
                "converter_version": package_version("skl2onnx"),
                "estimator": type(model).__name__,
            },
            synthetic_sample=synthetic,
            notes=notes,
        )


def _synthetic_sample(model: Any) -> Any:
    import numpy as np

    features = getattr(model, "n_features_in_", None)
    if features is None:
        raise UsageError("cannot tell how many features the model takes; pass --sample")
    rng = np.random.default_rng(0)
    return rng.normal(size=(SYNTHETIC_ROWS, int(features))).astype(np.float32)


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


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


converter = SklearnConverter()
