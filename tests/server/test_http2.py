"""gRPC's HTTP/2 transport (mserve/server/http2.py) against grpcio's own client: flow control
both ways, compression, unknown and streaming methods, many calls on one connection, the port
check and a graceful stop."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ..conftest import Server

pytestmark = pytest.mark.slow


def infer_request(rows: int, *outputs: str) -> Any:
    request = service_pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(name="X", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(np.ones((rows, 4), dtype=np.float32).tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def stub(server: Any, **options: Any) -> Any:
    channel = grpc.insecure_channel(server.grpc, **options)
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_large_replies_wait_for_the_clients_window(server: Any) -> None:
    # 3.6 MB of probabilities back: far over HTTP/2's 64 KiB default window
    reply = stub(server).ModelInfer(infer_request(300_000, "probabilities"), timeout=60)
    probabilities = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
    assert probabilities.size == 900_000
    assert np.allclose(probabilities.reshape(-1, 3).sum(axis=1), 1, atol=1e-4)


def test_gzip_compressed_requests(server: Any) -> None:
    reply = stub(server).ModelInfer(
        infer_request(2, "label"), timeout=10, compression=grpc.Compression.Gzip
    )
    assert list(reply.outputs[0].shape) == [2]


def test_unknown_and_streaming_methods_are_unimplemented(server: Any) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        unknown = channel.unary_unary("/inference.GRPCInferenceService/Nope")
        with pytest.raises(grpc.RpcError) as caught:
            unknown(b"", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        streaming = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer
        with pytest.raises(grpc.RpcError) as caught:
            list(streaming(iter([infer_request(1)]), timeout=10))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_message_that_does_not_parse_is_invalid(server: Any) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            infer(b"\xff\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "the message is not a valid ModelInfer request"


def test_many_calls_at_once_on_one_connection(server: Any) -> None:
    client = stub(server)
    futures = [client.ModelInfer.future(infer_request(3, "label"), timeout=30) for _ in range(200)]
    assert all(list(f.result().outputs[0].shape) == [3] for f in futures)


def test_a_taken_grpc_port_stops_the_start(served_repo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"gRPC port {port} on 127.0.0.1 is in use"):
            Server(served_repo, "--grpc-port", str(port))


def test_sigterm_lets_grpc_calls_in_flight_finish(served_repo: Path, tmp_path: Path) -> None:
    server = Server(served_repo, "--max-batch-size", "8", "--batch-delay-ms", "300")
    client = stub(server)
    results: list[Any] = []
    calls = [
        threading.Thread(
            target=lambda: results.append(client.ModelInfer(infer_request(1), timeout=30))
        )
        for _ in range(4)
    ]
    for call in calls:
        call.start()
    threading.Event().wait(0.1)  # the calls wait in the batcher's 300 ms window
    assert server.stop() == 0
    for call in calls:
        call.join(timeout=30)
    assert len(results) == 4
