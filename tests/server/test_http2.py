"""gRPC's HTTP/2 transport (mserve/server/http2.py) against grpcio's own client: flow control
both ways, compression, unknown and streaming methods, many calls on one connection, the port
check and a graceful stop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
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


def test_a_long_error_message_is_cut_and_the_connection_lives(server: Any) -> None:
    client = stub(server)
    request = infer_request(1)
    request.inputs[0].name = "x" * 20_000  # echoed in the error: over one HTTP/2 frame
    with pytest.raises(grpc.RpcError) as caught:
        client.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(caught.value.details()) <= 1024
    assert list(client.ModelInfer(infer_request(1, "label"), timeout=10).outputs[0].shape) == [1]


class RawConnection:
    """HTTP/2 by hand, to send what grpcio's client never would."""

    def __init__(self, server: Any) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, kind: int, flags: int, stream: int, payload: bytes = b"") -> None:
        head = len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big")
        self.sock.sendall(head + payload)

    def frames(self) -> Iterator[tuple[int, int, int, bytes]]:
        while True:
            while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(
                self.buffer[:3], "big"
            ):
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self.buffer += chunk
            length = int.from_bytes(self.buffer[:3], "big")
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big")
            payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
            yield kind, flags, stream, payload


def test_an_endless_header_block_closes_the_connection(server: Any) -> None:
    with RawConnection(server) as connection:
        connection.send(1, 0, 1, b"\x82")  # HEADERS without END_HEADERS
        for _ in range(5):  # CONTINUATION frames past the 64 KiB cap (and no more: all are read)
            connection.send(9, 0, 1, b"\x00" * 16_000)
        goaway = [f for f in connection.frames() if f[0] == 7]
    assert goaway and int.from_bytes(goaway[0][3][4:8], "big") == 11  # ENHANCE_YOUR_CALM


def test_a_reply_held_by_the_window_goes_once_settings_open_it(server: Any) -> None:
    from hpack import Encoder

    with RawConnection(server) as connection:
        connection.send(4, 0, 0, (4).to_bytes(2, "big") + (16).to_bytes(4, "big"))  # window 16 B
        headers = Encoder().encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/inference.GRPCInferenceService/ModelInfer"),
                (":authority", "x"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        message = infer_request(2, "probabilities").SerializeToString()
        connection.send(1, 4, 1, headers)
        connection.send(0, 1, 1, b"\0" + len(message).to_bytes(4, "big") + message)
        data = b""
        for kind, flags, stream, payload in connection.frames():
            if kind == 4 and flags & 1 and not data:  # our SETTINGS acknowledged: open the window
                connection.send(4, 0, 0, (4).to_bytes(2, "big") + (65535).to_bytes(4, "big"))
            if kind == 0 and stream == 1:
                data += payload
            if kind == 1 and stream == 1 and flags & 1:  # the trailers
                break
    reply = service_pb2.ModelInferResponse.FromString(data[5:])
    assert list(reply.outputs[0].shape) == [2, 3]
