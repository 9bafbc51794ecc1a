"""An onnxruntime session that checks and coerces inputs against the model's signature."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, MserveError, ValidationError, foreign_message
from .inputs import coerce_tensor, fit_shape, to_feeds
from .signature import Signature
from .verified import VerifiedModel

# coerce_tensor and fit_shape live in mserve.inputs; the server still imports them from here.
__all__ = ["Arrays", "ModelRunner", "coerce_tensor", "create_session", "fit_shape", "max_opset"]

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import onnxruntime as ort

Arrays = dict[str, "np.ndarray[Any, Any]"]


def create_session(
    model: Path | bytes | VerifiedModel, *, threads: int = 0, providers: list[str] | None = None
) -> ort.InferenceSession:
    """A session on a file, a serialized model, or a verified version (given as bytes only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    source: str | bytes
    if isinstance(model, VerifiedModel):
        source = model.serialized()
        if model.files:  # the checked bytes; onnxruntime opens no file of the version
            names = list(model.files)
            buffers = [model.files[name] for name in names]
            options.add_external_initializers_from_files_in_memory(
                names, buffers, [len(b) for b in buffers]
            )
    else:
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


def check_feedable(signature: Signature) -> None:
    """A ValidationError when onnxruntime's Python API cannot run the model: it has no numpy
    type for bfloat16 in either direction, so every inference would fail."""
    unfed = [t for t in (*signature.inputs, *signature.outputs) if t.dtype == "bfloat16"]
    if unfed:
        raise ValidationError(
            f"tensor {unfed[0].name!r} is bfloat16, which onnxruntime's Python API cannot "
            "feed or return; cast it to float32 or float16 in the model"
        )


class ModelRunner:
    """Runs one ONNX model; every input is checked against ``signature`` first."""

    def __init__(self, session: ort.InferenceSession, signature: Signature) -> None:
        check_feedable(signature)  # refused where it is exported, validated or loaded
        self.session = session
        self.signature = signature
        self.input_names = [t.name for t in signature.inputs]
        self.output_names = [o.name for o in session.get_outputs()]
        self.class_labels: list[str] | None = None  # a classifier's, in its scores' order

    @classmethod
    def open(cls, path: Path, threads: int = 0) -> ModelRunner:
        """Open an ONNX file whose external data (if any) must lie in the file's folder; a
        published version is opened with ``open_verified`` instead."""
        from .onnx_files import load

        return cls.open_verified(VerifiedModel(load(path)), threads)

    @classmethod
    def open_verified(
        cls, model: VerifiedModel, threads: int = 0, providers: list[str] | None = None
    ) -> ModelRunner:
        session = create_session(model, threads=threads, providers=providers)
        runner = cls(session, Signature.from_onnx(model.model))
        runner.class_labels = _class_labels(model.model)
        return runner

    def coerce(self, inputs: Any) -> Arrays:
        """``inputs`` (by input name, or one array for a single-input model) as checked feeds."""
        return to_feeds(self.signature.inputs, inputs)

    def run(self, inputs: Any) -> dict[str, Any]:
        feeds = self.coerce(inputs)
        return dict(zip(self.output_names, self.run_arrays(feeds), strict=True))

    def run_arrays(self, feeds: Arrays, options: Any = None) -> list[Any]:
        """The outputs for FEEDS; OPTIONS (onnxruntime.RunOptions) lets another thread stop
        the run."""
        try:
            outputs: list[Any] = self.session.run(self.output_names, feeds, options)
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
