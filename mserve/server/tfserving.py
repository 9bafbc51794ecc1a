"""TF Serving REST v1: ``:predict`` in row (``instances``) and columnar (``inputs``) forms,
model status and metadata. Binary strings travel as ``{"b64": "..."}``.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import orjson

from mserve.errors import InputError
from mserve.runtime import coerce_tensor

if TYPE_CHECKING:
    from mserve.signature import TensorSpec

    from .models import ServedVersion, VersionStatus

SIGNATURE = "serving_default"
TF_DTYPES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "float16": "DT_HALF",
    "bfloat16": "DT_BFLOAT16",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "bool": "DT_BOOL",
    "string": "DT_STRING",
}


def decode(body: bytes, served: ServedVersion) -> tuple[dict[str, Any], bool]:
    """The feeds, and whether the request used the row form (which shapes the reply)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}") from None
    if not isinstance(request, dict):
        raise InputError("the request must be a JSON object")
    signature_name = request.get("signature_name", SIGNATURE)
    if signature_name not in (SIGNATURE, ""):
        raise InputError(f"unknown signature_name '{signature_name}'; serving '{SIGNATURE}'")
    specs = served.signature.inputs
    names = [spec.name for spec in specs]
    if ("instances" in request) == ("inputs" in request):
        raise InputError("give exactly one of 'instances' (row form) or 'inputs' (columnar form)")
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise InputError("'instances' must be a non-empty list")
        if len(names) == 1 and not (isinstance(rows[0], dict) and names[0] in rows[0]):
            columns = {names[0]: rows}
        else:
            if not all(isinstance(row, dict) for row in rows):
                raise InputError(f"with several inputs each instance is an object keyed by {names}")
            columns = {name: [row.get(name) for row in rows] for name in names}
        row_form = True
    else:
        given = request["inputs"]
        if isinstance(given, dict):
            columns = given
        elif len(names) == 1:
            columns = {names[0]: given}
        else:
            raise InputError(f"with several inputs, 'inputs' is an object keyed by {names}")
        row_form = False
    unknown = set(columns) - set(names)
    if unknown:
        raise InputError(f"unknown input {', '.join(map(repr, sorted(unknown)))}")
    feeds = {}
    for spec in specs:
        if columns.get(spec.name) is None:
            raise InputError(f"missing input '{spec.name}'")
        feeds[spec.name] = coerce_tensor(spec, _decoded(columns[spec.name], spec))
    return feeds, row_form


def _decoded(value: Any, spec: TensorSpec) -> Any:
    """Replace {"b64": ...} objects with the bytes they carry (strings inputs only)."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InputError(f"input '{spec.name}': objects in a tensor must be {{\"b64\": ...}}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise InputError(f"input '{spec.name}': invalid base64") from None
    if isinstance(value, list):
        return [_decoded(v, spec) for v in value]
    return value


def encode(served: ServedVersion, outputs: list[Any], row_form: bool) -> bytes:
    names = served.runner.output_names
    values = [_jsonable(o) for o in outputs]
    if row_form:
        if len(names) == 1:
            return orjson.dumps({"predictions": values[0]}, option=orjson.OPT_SERIALIZE_NUMPY)
        columns = [v.tolist() if hasattr(v, "tolist") else v for v in values]  # per-row values
        predictions = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
    if len(names) == 1:
        return orjson.dumps({"outputs": values[0]}, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps(
        {"outputs": dict(zip(names, values, strict=True))}, option=orjson.OPT_SERIALIZE_NUMPY
    )


def _jsonable(array: Any) -> Any:
    import numpy as np

    array = np.asarray(array)
    if array.dtype == object:
        return [_text(v) for v in array.tolist()] if array.ndim else _text(array.item())
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def _text(value: Any) -> Any:
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value


def status(statuses: list[VersionStatus]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state,
                "status": {
                    "error_code": "OK" if not s.error else "UNKNOWN",
                    "error_message": s.error,
                },
            }
            for s in statuses
        ]
    }


def metadata(served: ServedVersion) -> dict[str, Any]:
    def tensors(specs: tuple[TensorSpec, ...]) -> dict[str, Any]:
        return {
            spec.name: {
                "dtype": TF_DTYPES.get(spec.dtype, "DT_INVALID"),
                "tensor_shape": {
                    "dim": [
                        {"size": str(d if isinstance(d, int) else -1), "name": ""}
                        for d in (spec.shape or ())
                    ],
                    "unknown_rank": spec.shape is None,
                },
                "name": spec.name,
            }
            for spec in specs
        }

    return {
        "model_spec": {"name": served.model, "signature_name": "", "version": str(served.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": tensors(served.signature.inputs),
                        "outputs": tensors(served.signature.outputs),
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }
