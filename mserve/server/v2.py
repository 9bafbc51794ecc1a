"""KServe V2 / Open Inference Protocol: request decoding, response encoding, metadata, config.

Inputs arrive as JSON ``data`` (flat or nested, row-major) or, with the binary tensor extension,
as raw little-endian bytes after the JSON header (``binary_data_size``); BYTES elements are
4-byte little-endian lengths followed by their bytes. Outputs go back the same two ways.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from mserve.errors import InputError
from mserve.runtime import coerce_tensor, fit_shape
from mserve.signature import V2_BY_DTYPE, Signature, TensorSpec, numpy_dtype

from .batching import batchable

if TYPE_CHECKING:
    from .models import ServedVersion

HEADER_LENGTH = b"inference-header-content-length"  # the binary extension's header
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class InferRequest:
    feeds: dict[str, np.ndarray[Any, Any]]
    outputs: list[tuple[str, bool]]  # (name, as binary)
    id: Any = None


class InputPlan(NamedTuple):
    """What decoding needs of one input, worked out once per version."""

    spec: TensorSpec
    datatype: str | None  # the V2 datatype a request must declare
    floats: Any  # the numpy dtype for float inputs, read straight from JSON; else None
    where: str  # how errors name it


def input_plan(signature: Signature) -> dict[str, InputPlan]:
    return {
        spec.name: InputPlan(
            spec,
            V2_BY_DTYPE.get(spec.dtype),
            numpy_dtype(spec.dtype) if spec.dtype.startswith("float") else None,
            f"input {spec.name!r}",
        )
        for spec in signature.inputs
    }


def decode(
    body: bytes,
    header_length: int | None,
    signature: Signature,
    plan: dict[str, InputPlan] | None = None,
) -> InferRequest:
    """A V2 request. PLAN is ``input_plan(signature)``, which a server works out once."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InputError("Inference-Header-Content-Length is larger than the body")
    header = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InputError("the request needs an 'inputs' list")
    feeds = Feeds(plan if plan is not None else input_plan(signature))
    offset = 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict):
            raise InputError("each input must be an object")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InputError(
                    f"input '{tensor.get('name')}': binary_data_size runs past the body"
                )
            raw = binary[offset : offset + size]
            offset += size
        feeds.add(
            tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), raw, tensor.get("data")
        )
    return InferRequest(feeds.complete(), _wanted(request, signature), request.get("id"))


class Feeds:
    """Decoded inputs, checked against the signature (shared by REST and gRPC)."""

    def __init__(self, plan: dict[str, InputPlan]) -> None:
        self.plan = plan
        self.arrays: dict[str, Any] = {}

    def add(self, name: Any, datatype: Any, shape: Any, raw: bytes | None, data: Any) -> None:
        if not isinstance(name, str):
            raise InputError("each input needs a 'name'")
        plan = self.plan.get(name)
        if plan is None:
            known = ", ".join(map(repr, self.plan))
            raise InputError(f"unknown input '{name}'; the model takes {known}")
        if name in self.arrays:
            raise InputError(f"input '{name}' is given twice")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InputError(f"input '{name}': 'shape' must be a list of non-negative integers")
        if datatype != plan.datatype:
            raise InputError(
                f"input '{name}' has datatype {datatype}; the model takes {plan.datatype}"
            )
        spec = plan.spec
        if raw is not None:  # exactly the declared dtype and shape: only the shape to check
            self.arrays[name] = fit_shape(spec, _from_bytes(raw, spec, shape, name), plan.where)
        elif plan.floats is not None:  # JSON numbers become floats without loss of sense
            self.arrays[name] = fit_shape(
                spec, _from_json(data, plan.floats, shape, name), plan.where
            )
        else:  # integers, booleans, strings: coerce_tensor refuses 1.5 for an int, 2 for a bool
            self.arrays[name] = coerce_tensor(spec, _from_json(data, None, shape, name))

    def complete(self) -> dict[str, Any]:
        missing = [name for name in self.plan if name not in self.arrays]
        if missing:
            raise InputError(f"missing input {', '.join(map(repr, missing))}")
        return self.arrays


def _count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _from_json(data: Any, dtype: Any, shape: list[int], name: str) -> Any:
    """The JSON values as an array of ``shape``: of DTYPE if given, else as parsed."""
    if data is None:
        raise InputError(f"input '{name}' has neither 'data' nor binary_data_size")
    try:
        array = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError):
        raise InputError(f"input '{name}': 'data' is not a flat or nested list of values") from None
    if array.size != _count(shape):
        raise InputError(f"input '{name}': {array.size} values for shape {shape}")
    return array.reshape(shape)


def _from_bytes(raw: bytes, spec: TensorSpec, shape: list[int], name: str) -> Any:
    count = _count(shape)
    if spec.dtype == "string":
        values = _unpack_strings(raw, name)
        if len(values) != count:
            raise InputError(f"input '{name}': {len(values)} strings for shape {shape}")
        return np.array(values, dtype=object).reshape(shape)
    dtype = numpy_dtype(spec.dtype).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InputError(f"input '{name}': {len(raw)} bytes for shape {shape} of {spec.dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _unpack_strings(raw: bytes, name: str) -> list[str]:
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InputError(f"input '{name}': truncated BYTES element")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InputError(f"input '{name}': truncated BYTES element")
        values.append(raw[offset : offset + length].decode("utf-8", errors="replace"))
        offset += length
    return values


def _wanted(request: dict[str, Any], signature: Signature) -> list[tuple[str, bool]]:
    default_binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    asked = request.get("outputs")
    if not asked:
        return [(spec.name, default_binary) for spec in signature.outputs]
    names = {spec.name for spec in signature.outputs}
    wanted = []
    for output in asked:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in names:
            raise InputError(f"unknown output {name!r}; the model gives {', '.join(sorted(names))}")
        binary = (output.get("parameters") or {}).get("binary_data", default_binary)
        wanted.append((name, bool(binary)))
    return wanted


def encode(
    served: ServedVersion, request: InferRequest, outputs: list[Any]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    plan = served.output_plan  # name -> (position, V2 datatype), worked out once per version
    entries, chunks = [], []
    for name, binary in request.outputs:
        position, datatype = plan[name]
        array = outputs[position]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif array.dtype.kind == "O":
            entry["data"] = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        else:  # orjson writes numpy arrays natively, except float16
            entry["data"] = array.ravel() if datatype != "FP16" else array.ravel().astype("float32")
        entries.append(entry)
    response: dict[str, Any] = {
        "model_name": served.model,
        "model_version": served.version_text,
        "outputs": entries,
    }
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=JSON_OPTIONS)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def raw_bytes(array: Any) -> bytes:
    """A tensor as the binary extension and gRPC carry it: little-endian, row-major."""
    if array.dtype == object:
        return _pack_strings(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _pack_strings(array: Any) -> bytes:
    parts = []
    for value in array.ravel():
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = [-1] if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": V2_BY_DTYPE.get(spec.dtype, "BYTES"), "shape": shape}


def metadata(served: ServedVersion, versions: list[int]) -> dict[str, Any]:
    return {
        "name": served.model,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [_tensor_metadata(s) for s in served.signature.inputs],
        "outputs": [_tensor_metadata(s) for s in served.signature.outputs],
    }


def config(served: ServedVersion) -> dict[str, Any]:
    """Triton's model configuration, as perf_analyzer and Triton tooling read it."""
    batching = served.settings.batching and batchable(served.signature)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = _tensor_metadata(spec)["shape"]
        return {
            "name": spec.name,
            "data_type": "TYPE_"
            + ("STRING" if spec.dtype == "string" else V2_BY_DTYPE[spec.dtype]),
            "dims": dims[1:] if batching else dims,
        }

    result: dict[str, Any] = {
        "name": served.model,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [served.version]}},
        "max_batch_size": served.settings.max_batch_size if batching else 0,
        "input": [tensor(s) for s in served.signature.inputs],
        "output": [tensor(s) for s in served.signature.outputs],
    }
    if batching:
        result["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(served.settings.max_queue_delay_ms * 1000)
        }
    return result
