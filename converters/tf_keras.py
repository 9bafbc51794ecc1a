"""TensorFlow SavedModels and Keras 3 models, converted with tf2onnx.

- A SavedModel directory: one signature (``--signature``, default ``serving_default``) becomes
  the ONNX graph, keeping the signature's input and output names.
Both file kinds need --trust-source: the model runs for the parity check, and a SavedModel's
graph ops can write files, while Keras's safe mode only refuses lambda layers at load time.

- A Keras ``.keras`` file (loaded in Keras's safe mode) or an in-process Keras model: Keras
  writes it as a SavedModel first (tf2onnx's ``from_keras`` does not work with Keras 3), so the
  inputs keep the names given by ``keras.Input(name=...)``. Parity compares ONNX with the Keras
  model itself, not with the intermediate SavedModel.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mserve.errors import ConversionError, UsageError, foreign_message
from mserve.inputs import bind, check_sample
from mserve.runtime import max_opset

from .registry import Conversion, native_stderr_muted, package_version, quiet, require

DEFAULT_SIGNATURE = "serving_default"
TF2ONNX_OPSET = 18  # the newest opset tf2onnx 1.17 writes
_UNNAMED_DIM = re.compile(r"unk__\d+")


@dataclass(frozen=True)
class SavedModelDir:
    path: Path


class TensorFlowConverter:
    name = "tensorflow"

    def runs_code(self, path: Path) -> str:
        if path.is_dir():
            return (
                "a SavedModel's graph runs for the parity check, and graph ops can read and "
                "write files (tf.io.write_file)"
            )
        # Safe mode refuses lambda layers when loading; it says nothing about what custom or
        # registered layers do when the model runs, and the model runs for the parity check.
        return (
            "a .keras model runs for the conversion and parity check, and Keras's safe mode "
            "does not stop custom layers' code"
        )

    def detect(self, path: Path) -> bool:
        return (path / "saved_model.pb").is_file() or path.suffix.lower() == ".keras"

    def accepts(self, obj: Any) -> bool:
        return any(c.__module__.startswith(("keras.", "tf_keras.")) for c in type(obj).__mro__)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        if path.is_dir():
            return SavedModelDir(path), []
        keras = _keras()
        try:
            with quiet():
                return keras.saving.load_model(str(path), compile=False, safe_mode=True), []
        except Exception as exc:  # bad archive, unknown custom layer, unsafe lambda
            raise UsageError(
                f"cannot load {path.name} with Keras: {foreign_message(exc)}"
            ) from None

    def convert(self, model: Any, sample: Any, options: Mapping[str, Any]) -> Conversion:
        tf = _tensorflow()
        if sample is None:
            raise UsageError(
                "TensorFlow models need --sample: it fixes the input shapes and dtypes"
            )
        signature_name = options.get("signature") or DEFAULT_SIGNATURE
        with tempfile.TemporaryDirectory(prefix="mserve-keras-") as scratch:
            if isinstance(model, SavedModelDir):
                saved = model.path
            else:
                saved = Path(scratch) / "saved_model"
                with quiet():
                    model.export(str(saved), format="tf_saved_model", verbose=False)
            with quiet():
                function = _signature(tf.saved_model.load(str(saved)), signature_name)
            specs = function.structured_input_signature[1]
            feeds = _feeds(specs, sample)
            with quiet():
                expected = _run(function, model, feeds, tf)
                onnx_model = _convert(saved, signature_name)
        _name_unknown_dims(onnx_model)
        return Conversion(
            model=onnx_model,
            feeds=feeds,
            expected=expected,
            source={
                "framework": "tensorflow" if isinstance(model, SavedModelDir) else "keras",
                "framework_version": str(tf.__version__),  # tensorflow or tensorflow-cpu
                "keras_version": package_version("keras"),
                "converter": "tf2onnx",
                "converter_version": package_version("tf2onnx"),
                "signature": signature_name,
            },
        )


def _tensorflow() -> Any:
    """TensorFlow and tf2onnx, imported without their log lines (TensorFlow's native libraries
    each print absl's oneDNN notice: twice per import). A user who sets TF_CPP_MIN_LOG_LEVEL
    sees everything TensorFlow logs at that level."""
    chosen = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ logging from now on
    mute = not chosen and "tensorflow" not in sys.modules
    with native_stderr_muted() if mute else contextlib.nullcontext():
        tf = require("tensorflow", "tensorflow")
        require("tf2onnx", "tensorflow", minimum="1.16")
    tf.get_logger().setLevel("ERROR")  # deprecation notices from tf2onnx's graph freezing
    return tf


def _keras() -> Any:
    _tensorflow()
    return require("keras", "tensorflow", minimum="3.0")


def _signature(loaded: Any, name: str) -> Any:
    signatures = dict(loaded.signatures)
    if name not in signatures:
        available = ", ".join(sorted(signatures)) or "none"
        raise UsageError(f"the SavedModel has no signature {name!r} (it has: {available})")
    return signatures[name]


def _feeds(specs: Mapping[str, Any], sample: Any) -> dict[str, Any]:
    import numpy as np

    names = list(specs)
    bound = bind(names, sample)
    check_sample({n: _dims(specs[n].shape) for n in names}, bound)
    return {n: np.asarray(bound[n], dtype=specs[n].dtype.as_numpy_dtype) for n in names}


def _dims(shape: Any) -> list[int | None] | None:
    """A TensorShape as a list (None: unknown rank)."""
    return None if shape.rank is None else list(shape.as_list())


def _run(function: Any, model: Any, feeds: dict[str, Any], tf: Any) -> dict[str, Any]:
    """The source's answers, named like the signature's outputs."""
    names = list(function.structured_outputs)
    if isinstance(model, SavedModelDir):
        returned = function(**{n: tf.constant(v) for n, v in feeds.items()})
        return {n: returned[n].numpy() for n in names}
    returned = model(feeds if len(feeds) > 1 else next(iter(feeds.values())), training=False)
    if isinstance(returned, Mapping):
        return {n: _numpy(returned[n]) for n in names}
    values = list(returned) if isinstance(returned, list | tuple) else [returned]
    return {n: _numpy(v) for n, v in zip(names, values, strict=True)}


def _numpy(value: Any) -> Any:
    import numpy as np

    return np.asarray(value)


def _convert(saved: Path, signature: str) -> Any:
    import tf2onnx
    from tf2onnx import tf_loader

    try:
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            str(saved), None, None, signatures=[signature], return_tensors_to_rename=True
        )
        onnx_model, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            input_names=inputs,
            output_names=outputs,
            opset=min(TF2ONNX_OPSET, max_opset()),
            tensors_to_rename=renames,
        )
    except Exception as exc:  # unsupported ops name themselves in tf2onnx's message
        raise ConversionError(
            f"tf2onnx cannot convert this model: {foreign_message(exc)}"
        ) from None
    return onnx_model


def _name_unknown_dims(model: Any) -> None:
    """tf2onnx calls every unknown dimension unk__N; an unnamed dimension says the same, plainly."""
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if _UNNAMED_DIM.fullmatch(dim.dim_param):
                dim.ClearField("dim_param")


converter = TensorFlowConverter()
