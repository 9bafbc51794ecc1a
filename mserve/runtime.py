"""An onnxruntime session that checks and coerces inputs against the model's signature."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, MserveError, ValidationError, foreign_message
from .signature import Signature, TensorSpec, numpy_dtype

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime as ort

Arrays = dict[str, "np.ndarray[Any, Any]"]


def create_session(
    model: Path | bytes, *, threads: int = 0, providers: list[str] | None = None
) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(
            source, sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises bare RuntimeError subclasses for bad models
        raise ValidationError(
            f"onnxruntime cannot load the model: {foreign_message(exc)}"
        ) from None


@cache
def max_opset() -> int:
    """The newest ai.onnx opset the installed onnxruntime loads (found by trying, once)."""
    import onnx
    from onnx import TensorProto, helper

    def loads(opset: int) -> bool:
        value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [value],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        try:
            create_session(model.SerializeToString())
        except ValidationError:
            return False
        return True

    opset = onnx.defs.onnx_opset_version() + 2  # onnxruntime may know an opset onnx does not
    while opset > 7 and not loads(opset):
        opset -= 1
    return opset


class ModelRunner:
    """Runs one ONNX model; every input is checked against ``signature`` first."""

    def __init__(self, session: ort.InferenceSession, signature: Signature) -> None:
        unfed = [t for t in (*signature.inputs, *signature.outputs) if t.dtype == "bfloat16"]
        if unfed:
            # onnxruntime's Python API has no numpy type for bfloat16 in either direction, so
            # every inference would fail: refuse the model where it is exported or loaded.
            raise ValidationError(
                f"tensor {unfed[0].name!r} is bfloat16, which onnxruntime's Python API cannot "
                "feed or return; cast it to float32 or float16 in the model"
            )
        self.session = session
        self.signature = signature
        self.input_names = [t.name for t in signature.inputs]
        self.output_names = [o.name for o in session.get_outputs()]
        self.class_labels: list[str] | None = None  # a classifier's, in its scores' order

    @classmethod
    def open(cls, path: Path, threads: int = 0) -> ModelRunner:
        """Open an ONNX file whose external data (if any) must lie in the file's folder."""
        import onnx

        from .onnx_files import check_external_data

        graph = onnx.load(str(path), load_external_data=False)
        check_external_data(graph, path.parent)
        runner = cls(create_session(path, threads=threads), Signature.from_onnx(graph))
        runner.class_labels = _class_labels(graph)
        return runner

    def coerce(self, inputs: Mapping[str, Any]) -> Arrays:
        expected = [t.name for t in self.signature.inputs]
        unknown = [name for name in inputs if name not in expected]
        if unknown:
            raise InputError(
                f"unknown input {', '.join(map(repr, unknown))}; "
                f"the model takes {', '.join(map(repr, expected))}"
            )
        missing = [name for name in expected if name not in inputs]
        if missing:
            raise InputError(f"missing input {', '.join(map(repr, missing))}")
        return {spec.name: coerce_tensor(spec, inputs[spec.name]) for spec in self.signature.inputs}

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        feeds = self.coerce(inputs)
        return dict(zip(self.output_names, self.run_arrays(feeds), strict=True))

    def run_arrays(self, feeds: Arrays) -> list[Any]:
        try:
            outputs: list[Any] = self.session.run(self.output_names, feeds)
        except _request_errors() as exc:
            # The inputs already fit the signature, so what fails now is their content or how
            # they fit together (e.g. two inputs with different batch sizes): the request's fault.
            raise InputError(f"the model rejected the input: {foreign_message(exc)}") from None
        except Exception as exc:  # anything else (out of memory, a provider failure) is ours
            raise MserveError(f"inference failed: {foreign_message(exc)}") from None
        return outputs


def _class_labels(model: onnx.ModelProto) -> list[str] | None:
    """The class labels of the graph's classifier (ONNX-ML classifiers carry them), if any."""
    for node in model.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type.endswith("Classifier"):
            for attribute in node.attribute:
                if attribute.name == "classlabels_strings":
                    return [s.decode() for s in attribute.strings]
                if attribute.name in ("classlabels_ints", "classlabels_int64s"):
                    return [str(i) for i in attribute.ints]
    return None


@cache
def _request_errors() -> tuple[type[Exception], ...]:
    """onnxruntime's errors that a request's inputs cause (imported once, not per call)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return (state.InvalidArgument, state.RuntimeException, state.Fail)


def coerce_tensor(spec: TensorSpec, value: Any, *, strict: bool = False) -> np.ndarray[Any, Any]:
    """``value`` as an array of the spec's dtype and shape, or a one-line InputError (STRICT:
    see ``fit_shape``)."""
    import numpy as np

    where = f"input {spec.name!r}"
    if not spec.is_tensor:
        raise InputError(f"{where} has type {spec.dtype}, which mserve cannot feed")
    try:
        array = np.asarray(value)
    except ValueError:
        raise InputError(f"{where} is not a rectangular array") from None
    if (
        array.dtype == object
        and array.size
        and not all(isinstance(v, str | bytes) for v in array.flat)
    ):
        raise InputError(f"{where} is not a rectangular array of one type")
    array = _cast(array, spec, where)
    return fit_shape(spec, array, where, strict=strict)


def _cast(array: np.ndarray[Any, Any], spec: TensorSpec, where: str) -> np.ndarray[Any, Any]:
    import numpy as np

    target = numpy_dtype(spec.dtype)
    kind = array.dtype.kind
    if spec.dtype == "string":
        if array.size and kind not in "USO":
            raise InputError(f"{where} expects strings, got {array.dtype.name} values")
        return (
            np.vectorize(_as_text, otypes=[object])(array) if array.size else array.astype(object)
        )
    if kind in "USO":
        raise InputError(f"{where} expects {spec.dtype} values, got strings")
    if (target.kind in "iub" and kind == "f") and (
        not np.all(np.isfinite(array)) or np.any(array != np.round(array))
    ):
        raise InputError(f"{where} expects {spec.dtype} values, got fractional numbers")
    if target.kind == "b" and kind in "iuf" and np.any((array != 0) & (array != 1)):
        raise InputError(f"{where} expects booleans (true/false or 0/1)")
    if target.kind in "iu" and array.size and kind in "iuf":
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise InputError(f"{where}: a value is out of range for {spec.dtype}")
    return array.astype(target, copy=False)


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def fit_shape(
    spec: TensorSpec, array: np.ndarray[Any, Any], where: str, *, strict: bool = False
) -> np.ndarray[Any, Any]:
    """``array`` (already of the right dtype) checked against the spec's rank and fixed dims.
    Unless STRICT (a wire request, which declares its shape), one row without its batch axis
    gets the axis, as a user giving one example means."""
    if spec.shape is None:
        return array
    rank = len(spec.shape)
    batch_axis = spec.shape[0] if rank else 0
    if (
        not strict
        and array.ndim == rank - 1
        and (batch_axis == 1 or not isinstance(batch_axis, int))
    ):
        array = array.reshape((1, *array.shape))
    if array.ndim != rank:
        raise InputError(
            f"{where} expects rank {rank} {spec.shape_text()}, got shape {list(array.shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"{where} expects {spec.shape_text()}, got {list(array.shape)} "
                f"(dimension {axis} must be {want})"
            )
    return array
