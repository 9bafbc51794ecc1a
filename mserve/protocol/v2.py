"""KServe V2 / Open Inference Protocol over HTTP: JSON bodies and the binary tensor extension,
both sides (the server decodes requests and encodes responses; the client the reverse).

Inputs arrive as JSON ``data`` (flat or nested, row-major) or as raw little-endian bytes after
the JSON header (``binary_data_size``), or, with ``Inference-Header-Content-Length: 0``, as the
whole body for a model with one input (Triton's raw binary request). Outputs go back as JSON or
binary, as the request asks. JSON has no NaN or infinity: a body that holds them is malformed,
and such an output value is ``null`` in a JSON reply (binary replies carry the IEEE value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from mserve.errors import InputError

from .tensors import (
    Array,
    Feeds,
    InferRequest,
    Plan,
    count,
    from_wire,
    raw_bytes,
    shown,
    wanted_outputs,
)

HEADER_LENGTH = b"inference-header-content-length"  # the binary extension's header
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def decode_request(body: bytes, header_length: int | None, plan: Plan) -> InferRequest:
    """A V2 request; HEADER_LENGTH is the binary extension's header, when given."""
    if header_length == 0:
        return _raw_request(body, plan)
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InputError("Inference-Header-Content-Length is larger than the body")
    header = body if header_length is None else body[:header_length]
    binary = b"" if header_length is None else body[header_length:]
    request = _object(header)
    tensors = request.get("inputs")
    if type(tensors) is not list:
        raise InputError("the request needs an 'inputs' list")
    feeds = Feeds(plan, booleans=_may_hold_booleans(header))
    offset = 0
    for tensor in tensors:
        if type(tensor) is not dict:
            raise InputError("each input must be an object")
        raw = None
        if "parameters" in tensor:
            size = _parameters(tensor, "input").get("binary_data_size")
            if size is not None:
                if type(size) is not int or size < 0 or offset + size > len(binary):
                    raise InputError(
                        f"input '{shown(tensor.get('name'))}': binary_data_size runs past the body"
                    )
                raw = binary[offset : offset + size]
                offset += size
        feeds.add(
            tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), raw, tensor.get("data")
        )
    if offset != len(binary):
        raise InputError("the body has binary data that no input's binary_data_size accounts for")
    default_binary = "parameters" in request and bool(
        _parameters(request, "request").get("binary_data_output", False)
    )
    if "outputs" in request:
        wanted = wanted_outputs(plan, _asked(request, default_binary), default_binary)
    else:
        wanted = plan.every_output[default_binary]
    request_id = request.get("id")
    if request_id is not None and type(request_id) is not str:
        raise InputError("'id' must be a string")
    return InferRequest(feeds.complete(), wanted, request_id)


def _may_hold_booleans(text: bytes) -> bool:
    """Whether the JSON TEXT has a ``true`` or ``false``; else no boolean can hide among its
    numbers, and looking for one is spared. Only a one-byte search is fast (memchr), so: an
    ``l`` (rare in a request, but in ``false``) and each ``u`` (a few: ``inputs``...)."""
    if b"l" in text and b"false" in text:
        return True
    at = text.find(b"u")
    while at >= 0:
        if text[at - 2 : at + 2] == b"true":
            return True
        at = text.find(b"u", at + 1)
    return False


def _object(header: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}") from None
    if not isinstance(request, dict):
        raise InputError("the request must be a JSON object")
    return request


def _parameters(entry: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = entry.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InputError(f"the {what}'s 'parameters' must be an object")
    return parameters


def _asked(request: dict[str, Any], default: bool) -> list[tuple[Any, bool]]:
    outputs = request["outputs"]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InputError("'outputs' must be a list of objects")
    return [
        (o.get("name"), bool(_parameters(o, "output").get("binary_data", default))) for o in outputs
    ]


def _raw_request(body: bytes, plan: Plan) -> InferRequest:
    """Triton's raw binary request: the body is the one input's tensor, its shape deduced from
    the byte count and the model's dims (one variable dimension at most)."""
    if len(plan.inputs) != 1:
        raise InputError("a raw binary request (header length 0) needs a model with one input")
    ((name, entry),) = plan.inputs.items()
    spec = entry.spec
    if spec.shape is None:
        raise InputError(f"input '{name}' has no known rank, so a raw body cannot give its shape")
    fixed = count([d for d in spec.shape if isinstance(d, int)])
    free = [axis for axis, d in enumerate(spec.shape) if not isinstance(d, int)]
    if spec.dtype == "string":
        elements, raw = 1, len(body).to_bytes(4, "little") + body  # the body is one element
    else:
        itemsize = np.dtype(spec.dtype).itemsize
        if len(body) % itemsize:
            raise InputError(f"input '{name}': {len(body)} bytes is not a whole number of values")
        elements, raw = len(body) // itemsize, body
    if len(free) > 1 or (fixed and elements % fixed) or (not free and elements != fixed):
        raise InputError(
            f"input '{name}' {spec.shape_text()}: cannot deduce a shape for {elements} values "
            "from a raw body; send a JSON header"
        )
    shape = [d if isinstance(d, int) else elements // max(fixed, 1) for d in spec.shape]
    feeds = Feeds(plan)
    feeds.add(name, entry.datatype, shape, raw, None)
    return InferRequest(feeds.complete(), plan.every_output[False])


def encode_response(
    model: str, version: str, plan: Plan, request: InferRequest, outputs: list[Array]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    entries, chunks = [], []
    for name, binary in request.outputs:
        position, datatype = plan.outputs[name]
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
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response, option=JSON_OPTIONS)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


# -- the client side ---------------------------------------------------------------------------


def encode_request(
    inputs: dict[str, tuple[Array, str]], *, binary: bool, binary_output: bool = False
) -> tuple[bytes, int | None]:
    """A request body for INPUTS (name -> (array, V2 datatype)), and the JSON header's length
    when tensors follow it as binary."""
    tensors, chunks = [], []
    for name, (array, datatype) in inputs.items():
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            raw = raw_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            values = array.ravel()
            tensor["data"] = (
                [v.decode() if isinstance(v, bytes) else str(v) for v in values]
                if array.dtype == object
                else values.tolist()
            )
        tensors.append(tensor)
    request: dict[str, Any] = {"inputs": tensors}
    if binary_output:
        request["parameters"] = {"binary_data_output": True}
    header = orjson.dumps(request)
    if not binary:
        return header, None
    return header + b"".join(chunks), len(header)


def decode_response(body: bytes, header_length: int | None) -> tuple[str, dict[str, Array]]:
    """The version that answered and its outputs (BYTES as bytes when binary, else text)."""
    from mserve.signature import DTYPE_BY_V2, numpy_dtype

    header = orjson.loads(body if header_length is None else body[:header_length])
    binary = b"" if header_length is None else body[header_length:]
    outputs, offset = {}, 0
    for output in header["outputs"]:
        datatype, shape = output["datatype"], output["shape"]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outputs[output["name"]] = from_wire(binary[offset : offset + size], datatype, shape)
            offset += size
            continue
        dtype = DTYPE_BY_V2.get(datatype, "string")
        values = np.array(
            [np.nan if v is None else v for v in output["data"]]
            if dtype.startswith("float")
            else output["data"],
            dtype=numpy_dtype(dtype),
        )
        outputs[output["name"]] = values.reshape(shape)
    return str(header["model_version"]), outputs
