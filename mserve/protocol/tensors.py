"""Tensors as the wire carries them, shared by every codec: the per-version plan of inputs and
outputs, decoded inputs checked against it, and the raw little-endian form of the binary
extension and gRPC (BYTES elements are a 4-byte little-endian length and their bytes).

Strings: onnxruntime's string tensors hold text (it turns a bytes element into the text of its
repr), so a BYTES element must be UTF-8, else the request gets a 400; outputs come back as the
UTF-8 bytes of the text. Nothing is ever altered on the way.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mserve.coercion import as_array, to_dtype
from mserve.errors import InputError
from mserve.inputs import fit_shape
from mserve.signature import V2_BY_DTYPE, Signature, TensorSpec, numpy_dtype

if TYPE_CHECKING:
    from collections.abc import Sequence

Array = np.ndarray[Any, Any]


class InputPlan(NamedTuple):
    """What decoding needs of one input, worked out once per version."""

    spec: TensorSpec
    datatype: str | None  # the V2 datatype a request must declare
    floats: Any  # the numpy dtype of a float input (JSON numbers go straight to it); else None
    where: str  # how errors name it


class OutputPlan(NamedTuple):
    position: int  # in onnxruntime's results
    datatype: str  # V2


@dataclass(frozen=True)
class Plan:
    """A version's inputs and outputs as the codecs need them (built once per version)."""

    signature: Signature
    inputs: dict[str, InputPlan]
    outputs: dict[str, OutputPlan]  # in onnxruntime's order
    every_output: dict[bool, list[tuple[str, bool]]]  # what a request asking for none gets

    def __post_init__(self) -> None:
        for binary in (False, True):
            self.every_output[binary] = [(name, binary) for name in self.outputs]

    @classmethod
    def of(cls, signature: Signature, output_names: Sequence[str] | None = None) -> Plan:
        dtypes = {spec.name: spec.dtype for spec in signature.outputs}
        names = output_names if output_names is not None else list(dtypes)
        return cls(
            signature,
            {
                spec.name: InputPlan(
                    spec,
                    V2_BY_DTYPE.get(spec.dtype),
                    numpy_dtype(spec.dtype) if spec.dtype.startswith("float") else None,
                    f"input {spec.name!r}",
                )
                for spec in signature.inputs
            },
            {
                name: OutputPlan(position, V2_BY_DTYPE.get(dtypes.get(name, ""), "BYTES"))
                for position, name in enumerate(names)
            },
            {},
        )


@dataclass
class InferRequest:
    """A decoded inference request, whatever the protocol."""

    feeds: dict[str, Array]
    outputs: list[tuple[str, bool]]  # (name, as binary), each at most once
    id: str | None = None


class Feeds:
    """Decoded inputs, checked against the plan. A request declares each input's shape, so the
    rank must match exactly (no batch axis is added, unlike a local ``predict``)."""

    def __init__(self, plan: Plan, booleans: bool = True) -> None:
        self.plan = plan.inputs
        self.arrays: dict[str, Array] = {}
        self.booleans = booleans  # False: the JSON has no true or false anywhere

    def add(self, name: Any, datatype: Any, shape: Any, raw: bytes | None, data: Any) -> None:
        if not isinstance(name, str):
            raise InputError("each input needs a 'name'")
        plan = self.plan.get(name)
        if plan is None:
            known = ", ".join(map(repr, self.plan))
            raise InputError(f"unknown input '{shown(name)}'; the model takes {known}")
        if name in self.arrays:
            raise InputError(f"input '{name}' is given twice")
        if not isinstance(shape, list) or not all(
            type(d) is int and d >= 0
            for d in shape  # bool is an int, never a dimension
        ):
            raise InputError(f"input '{name}': 'shape' must be a list of non-negative integers")
        if datatype != plan.datatype:
            raise InputError(
                f"input '{name}' has datatype {shown(datatype)}; the model takes {plan.datatype}"
            )
        spec = plan.spec
        if raw is not None:  # exactly the declared dtype and shape: only the shape to check
            array = from_raw(raw, spec, shape, name)
        else:  # checked exactly: no string, boolean or overflow becomes a number (inputs.py)
            array = _from_json(data, shape, name, plan, booleans=self.booleans)
        self.arrays[name] = fit_shape(spec, array, plan.where, strict=True)

    def complete(self) -> dict[str, Array]:
        missing = [name for name in self.plan if name not in self.arrays]
        if missing:
            raise InputError(f"missing input {', '.join(map(repr, missing))}")
        return self.arrays


def wanted_outputs(
    plan: Plan, asked: list[tuple[Any, bool]] | None, default_binary: bool
) -> list[tuple[str, bool]]:
    """The outputs a request asks for (all, when it names none), checked before inference:
    each must exist and be asked for once (Triton's rule)."""
    if not asked:
        return plan.every_output[default_binary]
    wanted, seen = [], set()
    for name, binary in asked:
        if not isinstance(name, str) or name not in plan.outputs:
            known = ", ".join(plan.outputs)
            raise InputError(f"unknown output {name!r}; the model gives {known}")
        if name in seen:
            raise InputError(f"output '{name}' is asked for twice")
        seen.add(name)
        wanted.append((name, binary))
    return wanted


def shown(value: Any) -> str:
    """A client's value as an error message quotes it: on one line, and short."""
    text = value if isinstance(value, str) else repr(value)
    return text if text.isprintable() and len(text) <= 64 else repr(text[:64])


def count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _from_json(data: Any, shape: list[int], name: str, plan: InputPlan, *, booleans: bool) -> Array:
    """The JSON values as an array of the input's dtype and the declared ``shape``, exactly
    (``mserve.coercion``). BOOLEANS: whether the JSON has a true or false anywhere."""
    if data is None:
        raise InputError(f"input '{name}' has neither 'data' nor binary_data_size")
    where = plan.where
    array = as_array(data, where)
    if array.size != count(shape):
        raise InputError(f"input '{name}': {array.size} values for shape {shape}")
    floats = plan.floats
    if floats is not None and not booleans and array.dtype == np.float64:
        # The common case, kept to few numpy calls (each costs several times more in the
        # server than in a micro-benchmark: np.errstate took 8 % of a tiny model's rate):
        # JSON numbers with no boolean among them, for a float input. A value past a narrower
        # float's range is reported by the cast, as an error for this module (below).
        try:
            return array.astype(floats, copy=False).reshape(shape)
        except RuntimeWarning:
            raise InputError(f"{where}: a value is out of range for {plan.spec.dtype}") from None
    lists = data if isinstance(data, list) else None
    return to_dtype(array, plan.spec, where, lists, booleans=booleans).reshape(shape)


# numpy reports a float cast past the target's range as a RuntimeWarning (and makes it
# infinite); here it is an error, caught above. Warnings from elsewhere are untouched.
warnings.filterwarnings("error", "overflow encountered in cast", RuntimeWarning, __name__)


def from_raw(raw: bytes, spec: TensorSpec, shape: list[int], name: str) -> Array:
    """A tensor from its raw bytes (binary extension, gRPC), of exactly the declared shape."""
    total = count(shape)
    if spec.dtype == "string":
        values = unpack_strings(raw, name)
        if len(values) != total:
            raise InputError(f"input '{name}': {len(values)} strings for shape {shape}")
        return np.array(values, dtype=object).reshape(shape)
    dtype = numpy_dtype(spec.dtype).newbyteorder("<")
    if len(raw) != total * dtype.itemsize:
        raise InputError(f"input '{name}': {len(raw)} bytes for shape {shape} of {spec.dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def text_of(value: bytes, name: str) -> str:
    """A BYTES element as the text onnxruntime holds, or a 400: never altered."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"input '{name}': a BYTES element is not UTF-8; the model's string input holds text"
        ) from None


def unpack_strings(raw: bytes, name: str) -> list[str]:
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InputError(f"input '{name}': truncated BYTES element")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InputError(f"input '{name}': truncated BYTES element")
        values.append(text_of(raw[offset : offset + length], name))
        offset += length
    return values


def raw_bytes(array: Array) -> bytes:
    """A tensor as the binary extension and gRPC carry it: little-endian, row-major."""
    if array.dtype == object:
        return pack_strings(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def pack_strings(array: Array) -> bytes:
    parts = []
    for value in array.ravel():
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def from_wire(raw: bytes, datatype: str, shape: list[int]) -> Array:
    """The client side: a raw output as an array (BYTES elements stay bytes)."""
    from mserve.signature import DTYPE_BY_V2

    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            values.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return np.array(values, dtype=object).reshape(shape)
    dtype = numpy_dtype(DTYPE_BY_V2[datatype]).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
