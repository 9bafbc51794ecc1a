"""REST and gRPC give the same answer to the same bad request: the same status (HTTP and its
gRPC code) and the same message, because both transports call one data plane."""

from __future__ import annotations

import struct
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

pytestmark = pytest.mark.slow

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
}


def tensor(**change: Any) -> dict[str, Any]:
    return {"name": "X", "datatype": "FP32", "shape": [1, 4], "raw": ROW.tobytes(), **change}


# (what, model, version, inputs, outputs, status, message fragment)
CASES = [
    ("unknown model", "nope", "", [tensor()], [], 404, "model 'nope' not found"),
    ("version with a leading zero", "iris", "01", [tensor()], [], 400, "invalid version '01'"),
    ("version that is not a number", "iris", "x", [tensor()], [], 400, "invalid version 'x'"),
    ("unknown version", "iris", "9", [tensor()], [], 404, "no version 9"),
    ("unknown input", "iris", "", [tensor(name="Y")], [], 400, "unknown input 'Y'"),
    ("wrong datatype", "iris", "", [tensor(datatype="FP64")], [], 400, "has datatype FP64"),
    ("rank without the batch axis", "iris", "", [tensor(shape=[4])], [], 400, "expects rank 2"),
    ("bytes for the shape", "iris", "", [tensor(shape=[2, 4])], [], 400, "16 bytes for shape"),
    ("input twice", "iris", "", [tensor(), tensor()], [], 400, "given twice"),
    ("missing input", "iris", "", [], [], 400, "missing input 'X'"),
    ("unknown output", "iris", "", [tensor()], ["nope"], 400, "unknown output 'nope'"),
    ("output twice", "iris", "", [tensor()], ["label", "label"], 400, "asked for twice"),
]


def rest(
    server: Any, model: str, version: str, inputs: list[dict[str, Any]], outputs: list[str]
) -> Any:
    header = {
        "inputs": [
            {
                "name": t["name"],
                "datatype": t["datatype"],
                "shape": t["shape"],
                "parameters": {"binary_data_size": len(t["raw"])},
            }
            for t in inputs
        ],
        "outputs": [{"name": name} for name in outputs],
    }
    if not outputs:
        del header["outputs"]
    head = orjson.dumps(header)
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return httpx.post(
        server.url + path,
        content=head + b"".join(t["raw"] for t in inputs),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def grpc_call(
    server: Any, model: str, version: str, inputs: list[dict[str, Any]], outputs: list[str]
) -> grpc.RpcError:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for t in inputs:
        request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        request.raw_input_contents.append(t["raw"])
    for name in outputs:
        request.outputs.add(name=name)
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
    return caught.value


@pytest.mark.parametrize(
    ("model", "version", "inputs", "outputs", "status", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rest_and_grpc_agree(
    server: Any,
    model: str,
    version: str,
    inputs: list[dict[str, Any]],
    outputs: list[str],
    status: int,
    fragment: str,
) -> None:
    reply = rest(server, model, version, inputs, outputs)
    error = grpc_call(server, model, version, inputs, outputs)
    assert reply.status_code == status, reply.text
    assert error.code() == CODES[status]
    message = reply.json()["error"]
    assert fragment in message
    assert error.details() == message


def test_grpc_checks_the_message_invariants_first(server: Any) -> None:
    two = [tensor(), tensor(name="Y")]
    request = service_pb2.ModelInferRequest(model_name="iris")
    for t in two:
        request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    request.raw_input_contents.append(ROW.tobytes())  # one raw buffer for two inputs
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 raw_input_contents for 2 inputs" in caught.value.details()


def test_grpc_takes_messages_as_large_as_rest_bodies(server: Any) -> None:
    rows = np.zeros((300_000, 4), dtype=np.float32)  # 4.8 MB: over grpcio's default 4 MiB
    request = service_pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(name="X", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    request.outputs.add(name="label")
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelInfer(request, timeout=30)
    assert list(reply.outputs[0].shape) == [300_000]


def test_model_ready_is_an_answer_never_an_error(server: Any) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for name, version in (("iris", "7"), ("nope", "")):
            reply = stub.ModelReady(service_pb2.ModelReadyRequest(name=name, version=version))
            assert reply.ready is False
            rest = httpx.get(
                f"{server.url}/v2/models/{name}"
                + (f"/versions/{version}" if version else "")
                + "/ready"
            )
            assert rest.status_code == 503 and rest.json() == {"name": name, "ready": False}


def test_bytes_are_never_altered(server: Any) -> None:
    """A BYTES element that is not UTF-8 cannot reach a string input unaltered: 400 on both."""
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    churn = {"name": "contract", "datatype": "BYTES", "shape": [1, 1], "raw": raw}
    header = orjson.dumps(
        {
            "inputs": [
                {k: v for k, v in churn.items() if k != "raw"}
                | {"parameters": {"binary_data_size": len(raw)}}
            ]
        }
    )
    reply = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 400 and "not UTF-8" in reply.json()["error"]
    error = grpc_call(server, "churn", "", [churn], [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "not UTF-8" in error.details()
