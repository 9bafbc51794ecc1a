"""Tensor specs read from an ONNX graph, and whether one signature can replace another."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx

# Dimension: a fixed size, a symbolic name ("batch"), or None when the graph says nothing.
Dim = int | str | None

# ONNX element type -> (mserve dtype, KServe V2 datatype); the numpy dtype has the same name.
ONNX_TYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "FP32"),
    2: ("uint8", "UINT8"),
    3: ("int8", "INT8"),
    4: ("uint16", "UINT16"),
    5: ("int16", "INT16"),
    6: ("int32", "INT32"),
    7: ("int64", "INT64"),
    8: ("string", "BYTES"),
    9: ("bool", "BOOL"),
    10: ("float16", "FP16"),
    11: ("float64", "FP64"),
    12: ("uint32", "UINT32"),
    13: ("uint64", "UINT64"),
    16: ("bfloat16", "BF16"),
}
NUMPY_TO_DTYPE = {name: name for name, _ in ONNX_TYPES.values() if name != "string"}
V2_BY_DTYPE = dict(ONNX_TYPES.values())
DTYPE_BY_V2 = {v2: name for name, v2 in ONNX_TYPES.values()}


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy dtype that holds values of an mserve dtype (strings travel as Python objects)."""
    import numpy as np

    if dtype == "string":
        return np.dtype(object)
    if dtype == "bfloat16":
        raise ValueError("bfloat16 tensors have no numpy dtype")
    return np.dtype(dtype)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...] | None  # None: rank unknown (or not a tensor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        shape = data.get("shape")
        return cls(str(data["name"]), str(data["dtype"]), None if shape is None else tuple(shape))

    @property
    def is_tensor(self) -> bool:
        return self.dtype in NUMPY_TO_DTYPE or self.dtype in {"string", "bfloat16"}

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> Signature:
        graph = model.graph
        # Before IR 4, initializers were also listed as graph inputs; they are not the caller's.
        initializers = {init.name for init in graph.initializer}
        return cls(
            tuple(_spec(v) for v in graph.input if v.name not in initializers),
            tuple(_spec(v) for v in graph.output),
        )


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorSpec(value.name, _describe_type(value.type), None)
    tensor = value.type.tensor_type
    dtype = ONNX_TYPES.get(tensor.elem_type, (f"onnx-type-{tensor.elem_type}", ""))[0]
    if not tensor.HasField("shape"):
        return TensorSpec(value.name, dtype, None)
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        which = dim.WhichOneof("value")
        dims.append(dim.dim_value if which == "dim_value" else dim.dim_param or None)
    return TensorSpec(value.name, dtype, tuple(dims))


def _describe_type(type_proto: onnx.TypeProto) -> str:
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return ONNX_TYPES.get(type_proto.tensor_type.elem_type, ("?", ""))[0]
    if kind == "sequence_type":
        return f"sequence({_describe_type(type_proto.sequence_type.elem_type)})"
    if kind == "map_type":
        key = ONNX_TYPES.get(type_proto.map_type.key_type, ("?", ""))[0]
        return f"map({key}, {_describe_type(type_proto.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_describe_type(type_proto.optional_type.elem_type)})"
    return str(kind)


@dataclass(frozen=True)
class SignatureChange:
    breaking: bool
    where: str  # "input x", "output y"
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"breaking": self.breaking, "where": self.where, "message": self.message}


@dataclass
class CompatibilityReport:
    changes: list[SignatureChange] = field(default_factory=list)

    @property
    def breaking(self) -> list[SignatureChange]:
        return [c for c in self.changes if c.breaking]

    @property
    def compatible(self) -> bool:
        return not self.breaking

    def to_dict(self) -> dict[str, Any]:
        return {"compatible": self.compatible, "changes": [c.to_dict() for c in self.changes]}


def compare_signatures(old: Signature, new: Signature) -> CompatibilityReport:
    """What a client written against ``old`` would notice if it were sent to ``new``."""
    report = CompatibilityReport()
    _compare_side(report, "input", old.inputs, new.inputs, added_breaks=True)
    _compare_side(report, "output", old.outputs, new.outputs, added_breaks=False)
    return report


def _compare_side(
    report: CompatibilityReport,
    side: str,
    old: tuple[TensorSpec, ...],
    new: tuple[TensorSpec, ...],
    *,
    added_breaks: bool,
) -> None:
    old_by_name = {t.name: t for t in old}
    new_by_name = {t.name: t for t in new}
    for name, spec in old_by_name.items():
        if name not in new_by_name:
            report.changes.append(
                SignatureChange(True, f"{side} {name}", f"{side} removed or renamed")
            )
            continue
        _compare_spec(report, f"{side} {name}", spec, new_by_name[name])
    for name in new_by_name.keys() - old_by_name.keys():
        message = f"new {side}" + (": existing clients do not send it" if added_breaks else "")
        report.changes.append(SignatureChange(added_breaks, f"{side} {name}", message))


def _compare_spec(
    report: CompatibilityReport, where: str, old: TensorSpec, new: TensorSpec
) -> None:
    if old.dtype != new.dtype:
        report.changes.append(SignatureChange(True, where, f"dtype {old.dtype} -> {new.dtype}"))
    if old.shape is None or new.shape is None:
        if old.shape is not None:
            report.changes.append(SignatureChange(False, where, "shape no longer declared"))
        elif new.shape is not None:
            report.changes.append(
                SignatureChange(True, where, f"shape now fixed to {new.shape_text()}")
            )
        return
    if len(old.shape) != len(new.shape):
        report.changes.append(
            SignatureChange(True, where, f"rank {len(old.shape)} -> {len(new.shape)}")
        )
        return
    for axis, (before, after) in enumerate(zip(old.shape, new.shape, strict=True)):
        before_fixed, after_fixed = isinstance(before, int), isinstance(after, int)
        if before_fixed and after_fixed and before != after:
            report.changes.append(
                SignatureChange(True, where, f"dimension {axis}: {before} -> {after}")
            )
        elif not before_fixed and after_fixed:
            report.changes.append(
                SignatureChange(True, where, f"dimension {axis}: variable -> fixed {after}")
            )
        elif before_fixed and not after_fixed:
            report.changes.append(
                SignatureChange(False, where, f"dimension {axis}: fixed {before} -> variable")
            )
