"""TF Serving REST v1 bodies: ``:predict`` in row (``instances``) and columnar (``inputs``)
forms, ``:classify`` and ``:regress`` over ``examples``.

As in TF Serving: binary strings travel as ``{"b64": "..."}``, and string outputs whose name
ends in ``_bytes`` go back that way; ``NaN``, ``Infinity`` and ``-Infinity`` are accepted as
JSON tokens in requests and written as such in replies.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mserve.errors import InputError
from mserve.inputs import coerce_tensor

from .tensors import Array, Plan, shown, text_of

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
VERBS = ("predict", "classify", "regress")
MAX_DEPTH = 64  # numpy's own limit on an array's rank


@dataclass
class TfRequest:
    verb: str
    feeds: dict[str, Array]
    row_form: bool  # "instances" (and examples) shape the reply by rows
    output: int = 0  # :classify and :regress: the position of the scores or values


def decode_request(verb: str, body: bytes, plan: Plan) -> TfRequest:
    request = _loads(body)
    if not isinstance(request, dict):
        raise InputError("the request must be a JSON object")
    signature_name = request.get("signature_name", SIGNATURE)
    if signature_name not in (SIGNATURE, ""):
        raise InputError(f"unknown signature_name '{shown(signature_name)}'; serving '{SIGNATURE}'")
    names = list(plan.inputs)
    if verb != "predict":
        return TfRequest(verb, _examples(request, plan), True, _answering_output(verb, plan))
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
    else:
        given = request["inputs"]
        if isinstance(given, dict):
            columns = given
        elif len(names) == 1:
            columns = {names[0]: given}
        else:
            raise InputError(f"with several inputs, 'inputs' is an object keyed by {names}")
    return TfRequest(verb, _feeds(columns, plan), "instances" in request)


def _answering_output(verb: str, plan: Plan) -> int:
    """The output :classify reads scores from (float, [N, C] with C not 1; "prob..." or
    "score..." first) or :regress reads values from (float, [N] or [N, 1]); checked before
    inference."""
    floats = {
        spec.name: spec.shape
        for spec in plan.signature.outputs
        if spec.dtype.startswith("float") and spec.shape is not None
    }
    if verb == "classify":
        fits = [n for n, shape in floats.items() if len(shape) == 2 and shape[1] != 1]
        fits.sort(key=lambda n: not n.lower().startswith(("prob", "score")))
    else:
        fits = [n for n, shape in floats.items() if len(shape) == 1 or shape[1:] == (1,)]
    if not fits:
        kind = (
            "a classifier (no [N, C] float scores)"
            if verb == "classify"
            else ("a regressor (no [N] or [N, 1] float output)")
        )
        raise InputError(f":{verb} needs {kind}; use :predict")
    return plan.outputs[fits[0]].position


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = exc.msg
    try:  # TF Serving's parser takes NaN and Infinity; orjson, being strict, does not
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InputError(f"malformed JSON: {message}") from None


def _examples(request: dict[str, Any], plan: Plan) -> dict[str, Array]:
    """``examples`` (each an object of features, merged over ``context``) as one column per
    input: a feature's value is the input's row (a number, or a list for a vector input)."""
    examples = request.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InputError("'examples' must be a non-empty list of objects")
    context = request.get("context") or {}
    if not isinstance(context, dict) or not all(isinstance(e, dict) for e in examples):
        raise InputError("'examples' and 'context' must be objects of features")
    rows = [{**context, **example} for example in examples]
    columns = {name: [row.get(name) for row in rows] for name in plan.inputs}
    for name, entry in plan.inputs.items():
        shape = entry.spec.shape
        if shape is not None and len(shape) == 2 and not isinstance(columns[name][0], list):
            columns[name] = [[value] for value in columns[name]]  # scalars of a [N, 1] input
    return _feeds(columns, plan)


def _feeds(columns: dict[str, Any], plan: Plan) -> dict[str, Array]:
    unknown = set(columns) - set(plan.inputs)
    if unknown:
        raise InputError(f"unknown input {', '.join(map(repr, sorted(unknown)))}")
    feeds = {}
    for name, entry in plan.inputs.items():
        value = columns.get(name)
        if value is None or (isinstance(value, list) and None in value):
            raise InputError(f"missing input '{name}'")
        feeds[name] = coerce_tensor(entry.spec, _decoded(value, name))
    return feeds


def _decoded(value: Any, name: str, depth: int = 0) -> Any:
    """Replace {"b64": ...} objects with the text they carry (string inputs hold text)."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InputError(f"input '{name}': objects in a tensor must be {{\"b64\": ...}}")
        try:
            return text_of(base64.b64decode(value["b64"], validate=True), name)
        except (binascii.Error, ValueError):  # non-ASCII text raises a plain ValueError
            raise InputError(f"input '{name}': invalid base64") from None
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise InputError(f"input '{name}' is nested deeper than {MAX_DEPTH} levels")
        return [_decoded(v, name, depth + 1) for v in value]
    return value


def encode_reply(
    request: TfRequest, plan: Plan, outputs: list[Array], labels: list[str] | None
) -> bytes:
    """The answer to REQUEST; LABELS are the classifier's class labels, if it has them."""
    if request.verb == "predict":
        return encode_predict(plan, outputs, request.row_form)
    if request.verb == "classify":
        scores = outputs[request.output]
        if labels is not None and len(labels) != scores.shape[1]:
            labels = None  # these scores are not the classifier's own
        return encode_classify(scores, labels)
    return encode_regress(outputs[request.output])


def encode_predict(plan: Plan, outputs: list[Array], row_form: bool) -> bytes:
    dumps = _dumps if all(map(_finite, outputs)) else _dumps_special
    names = list(plan.outputs)
    values = [_jsonable(name, array) for name, array in zip(names, outputs, strict=True)]
    if row_form:
        if len(names) == 1:
            return dumps({"predictions": values[0]})
        if len({len(o) if o.ndim else -1 for o in outputs}) != 1 or not outputs[0].ndim:
            raise InputError(
                "the outputs do not share a batch dimension; use the columnar 'inputs' form"
            )
        columns = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
        predictions = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        return dumps({"predictions": predictions})
    if len(names) == 1:
        return dumps({"outputs": values[0]})
    return dumps({"outputs": dict(zip(names, values, strict=True))})


def encode_classify(scores: Array, labels: list[str] | None) -> bytes:
    """One list of [label, score] pairs per example; labels are "" when the model has none."""
    names = labels if labels is not None else [""] * scores.shape[1]
    result = [[[n, float(s)] for n, s in zip(names, row, strict=True)] for row in scores.tolist()]
    return (_dumps if _finite(scores) else _dumps_special)({"result": result})


def encode_regress(values: Array) -> bytes:
    result = values.reshape(len(values)).astype(np.float64).tolist()
    return (_dumps if _finite(values) else _dumps_special)({"result": result})


def _jsonable(name: str, array: Array) -> Any:
    if array.dtype == object:
        as_b64 = name.endswith("_bytes")
        return np.vectorize(lambda v: _text(v, as_b64), otypes=[object])(array).tolist()
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def _text(value: Any, as_b64: bool) -> Any:
    data = value if isinstance(value, bytes) else str(value).encode()
    if as_b64:
        return {"b64": base64.b64encode(data).decode()}
    return data.decode()


def _finite(array: Array) -> bool:
    return array.dtype.kind != "f" or bool(np.isfinite(array).all())


def _dumps(reply: dict[str, Any]) -> bytes:
    return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


def _dumps_special(reply: dict[str, Any]) -> bytes:
    """With NaN or infinite values: TF Serving's tokens, which only the stdlib writes."""
    return json.dumps(_plain(reply), separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
