"""KServe V2 over gRPC: ``ModelInferRequest`` to the same ``InferRequest`` the REST codec gives,
and outputs back to a ``ModelInferResponse``; the client side too.

The message classes come from the ``tritonclient`` wheel (generated from Triton's
grpc_service.proto), so the wire format is exactly the one tritonclient and the kserve client
speak. Tensors arrive in ``raw_input_contents`` (what tritonclient sends) or in typed
``contents``; outputs go back in ``raw_output_contents``. The message's own invariants are
checked first: raw buffers for all inputs or none, and one per input.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from mserve.errors import InputError

from .tensors import Array, Feeds, InferRequest, Plan, raw_bytes, shown, text_of, wanted_outputs

CONTENTS = {  # the typed contents field of each V2 datatype
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_request(message: Any, plan: Plan) -> InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InputError(
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs; "
            "give one per input, or use contents"
        )
    feeds = Feeds(plan)
    for index, tensor in enumerate(message.inputs):
        data = None
        if not raw:
            field = CONTENTS.get(tensor.datatype)
            if field is None:
                datatype = shown(tensor.datatype)
                raise InputError(
                    f"input '{shown(tensor.name)}': datatype {datatype} has no contents"
                )
            data = list(getattr(tensor.contents, field))
            if tensor.datatype == "BYTES":
                data = [text_of(value, tensor.name) for value in data]
        feeds.add(
            tensor.name, tensor.datatype, list(tensor.shape), raw[index] if raw else None, data
        )
    asked = message.outputs
    wanted = (
        wanted_outputs(plan, [(output.name, True) for output in asked], True)
        if asked
        else plan.every_output[True]
    )
    return InferRequest(feeds.complete(), wanted, message.id or None)


def encode_response(
    model: str, version: str, plan: Plan, request: InferRequest, outputs: list[Array]
) -> Any:
    reply = service_pb2.ModelInferResponse(
        model_name=model, model_version=version, id=request.id or ""
    )
    for name, _ in request.outputs:
        position, datatype = plan.outputs[name]
        array = outputs[position]
        reply.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        reply.raw_output_contents.append(raw_bytes(array))
    return reply


def encode_request(model: str, version: str, inputs: dict[str, tuple[Array, str]]) -> bytes:
    """The client side: a serialized ModelInferRequest with raw tensors."""
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, (array, datatype) in inputs.items():
        message.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        message.raw_input_contents.append(raw_bytes(array))
    return bytes(message.SerializeToString())
