"""The direct path (mserve/server/http.py): an inference request on a route seen before skips
ASGI.

Raw sockets check that it keeps what uvicorn's own path gives:
- pipelining order;
- keep-alive, and ``Connection: close``;
- HTTP/1.0;
- chunked bodies, and the size limit;
- ``Expect: 100-continue``;
- TF Serving ``:predict``;
- batching;
- a graceful SIGTERM.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server

pytestmark = pytest.mark.slow

PATH = "/v2/models/iris/infer"
ROWS = {0: [5.1, 3.5, 1.4, 0.2], 1: [5.9, 3.0, 4.2, 1.5], 2: [6.7, 3.0, 5.2, 2.3]}  # label: row


def body(label: int = 0) -> bytes:
    row = ROWS[label]
    return json.dumps(
        {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    ).encode()


def post(label: int = 0, *headers: str, version: str = "1.1") -> bytes:
    data = body(label)
    head = [
        f"POST {PATH} HTTP/{version}",
        "Host: localhost",
        f"Content-Length: {len(data)}",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    def label(self) -> int:
        return int(self.json()["outputs"][0]["data"][0])


class Connection:
    """One raw keep-alive connection; replies are read by Content-Length."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    def reply(self) -> Reply:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if status == 100:
            return Reply(status, headers, b"")
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return Reply(status, headers, data)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, served_repo: Path) -> Any:
    repo = tmp_path_factory.mktemp("direct") / "models"
    shutil.copytree(served_repo, repo)
    running = Server(repo, "--max-body-mb", "0.001")
    assert httpx.post(running.url + PATH, content=body()).status_code == 200  # the route is known
    yield running
    assert running.stop() == 0


def test_pipelined_requests_are_answered_in_order(direct: Server) -> None:
    with Connection(direct) as connection:
        health = b"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n"
        connection.send(post(2) + health + post(1) + post(0))
        replies = [connection.reply() for _ in range(4)]
        assert [r.status for r in replies] == [200] * 4
        assert replies[1].json() == {"ready": True}
        assert [replies[0].label(), replies[2].label(), replies[3].label()] == [2, 1, 0]
        connection.send(post(1))  # still open: keep-alive
        assert connection.reply().label() == 1


def test_tf_serving_predict_takes_the_direct_path_too(direct: Server) -> None:
    def predict(label: int, path: str = "/v1/models/iris:predict") -> bytes:
        data = json.dumps({"instances": [ROWS[label]]}).encode()
        return (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )

    versioned = "/v1/models/iris/versions/1:predict"
    for path in ("/v1/models/iris:predict", versioned):  # routed once, then known
        assert httpx.post(direct.url + path, json={"instances": [ROWS[0]]}).is_success
    with Connection(direct) as connection:
        connection.send(predict(2) + post(1) + predict(0, versioned) + predict(1))
        replies = [connection.reply() for _ in range(4)]
    assert [r.status for r in replies] == [200] * 4
    predictions = [r.json()["predictions"][0]["label"] for r in (replies[0], *replies[2:])]
    assert predictions == [2, 0, 1] and replies[1].label() == 1
    metrics = httpx.get(f"{direct.url}/metrics").text
    assert (
        'mserve_requests_total{model="iris",outcome="ok",protocol="tfserving",version="1"}'
        in metrics
    )


def test_connection_close_and_http_1_0_end_the_connection(direct: Server) -> None:
    for request in (post(2, "Connection: close"), post(2, version="1.0")):
        with Connection(direct) as connection:
            connection.send(request)
            reply = connection.reply()
            assert reply.status == 200 and reply.label() == 2
            assert reply.headers["connection"] == "close"
            assert connection.closed()


def test_chunked_bodies_and_the_size_limit(direct: Server) -> None:
    data = body(1)
    head = f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunked = head + b"".join(
        b"%x\r\n%s\r\n" % (len(part), part) for part in (data[:10], data[10:])
    )
    with Connection(direct) as connection:
        connection.send(chunked + b"0\r\n\r\n")
        assert connection.reply().label() == 1
        # Over the 1,048-byte limit without a Content-Length to refuse it early: the body is
        # dropped as it arrives, the answer is a 413, and the connection stays usable.
        connection.send(head + b"".join(b"200\r\n" + b" " * 512 + b"\r\n" for _ in range(4)))
        connection.send(b"0\r\n\r\n")
        reply = connection.reply()
        assert reply.status == 413 and "1048-byte limit" in reply.json()["error"]
        connection.send(post(0))
        assert connection.reply().label() == 0


def test_expect_100_continue_is_honoured(direct: Server) -> None:
    data = body(2)
    with Connection(direct) as connection:
        connection.send(
            f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
        )
        assert connection.reply().status == 100
        connection.send(data)
        assert connection.reply().label() == 2


def test_direct_answers_carry_ids_metrics_and_errors(direct: Server) -> None:
    with Connection(direct) as connection:
        connection.send(post(0, "X-Request-Id: trace-42") + post(0, "X-Request-Id: caf\xe9"))
        first, second = connection.reply(), connection.reply()
        assert first.headers["x-request-id"] == "trace-42"
        assert second.headers["x-request-id"].isdigit()  # not printable ASCII: replaced
        bad = b'{"inputs": 1}'
        connection.send(
            f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Length: {len(bad)}\r\n\r\n".encode()
            + bad
        )
        error = connection.reply()
        assert error.status == 400 and error.json() == {
            "error": "the request needs an 'inputs' list"
        }
    metrics = httpx.get(f"{direct.url}/metrics").text
    assert 'mserve_requests_total{model="iris",outcome="400",protocol="v2",version="1"}' in metrics


def test_batched_requests_pipelined_on_one_connection(repo_copy: Path) -> None:
    server = Server(repo_copy, "--max-batch-size", "8", "--batch-delay-ms", "20")
    try:
        assert httpx.post(server.url + PATH, content=body()).status_code == 200
        with Connection(server) as connection:
            health = b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n"
            connection.send(post(1) + health + post(2) + post(0))
            replies = [connection.reply() for _ in range(4)]
            assert [r.status for r in replies] == [200] * 4
            assert [replies[0].label(), replies[2].label(), replies[3].label()] == [1, 2, 0]
            assert replies[1].json() == {"live": True}
    finally:
        assert server.stop() == 0


def test_a_client_gone_mid_pipeline_leaves_no_error_in_the_log(repo_copy: Path) -> None:
    server = Server(repo_copy, "--max-batch-size", "8", "--batch-delay-ms", "100")
    try:
        for warm in (False, True):  # the first request through ASGI, then on the direct path
            for _ in range(3):
                with Connection(server) as connection:
                    connection.send(post(0) * 4)
                    time.sleep(0.15)  # one answered, the next one running, two queued
            if not warm:
                assert httpx.post(server.url + PATH, content=body()).status_code == 200
        time.sleep(0.5)
        assert httpx.post(server.url + PATH, content=body(2)).json()["outputs"][0]["data"] == [2]
    finally:
        assert server.stop() == 0
    log = server.stderr()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


def test_a_client_gone_mid_body_leaves_nothing_in_the_log(repo_copy: Path) -> None:
    server = Server(repo_copy, "--no-access-log")
    try:
        for _ in range(2):  # the first through ASGI, the second on the direct path
            for _ in range(3):
                with Connection(server) as connection:
                    head = f"POST {PATH} HTTP/1.1\r\nHost: test\r\nContent-Length: 400\r\n\r\n"
                    connection.send(head.encode() + body()[:20])
                    time.sleep(0.05)
            assert httpx.post(server.url + PATH, content=body(2)).status_code == 200
        time.sleep(0.3)
    finally:
        assert server.stop() == 0
    log = server.stderr()
    assert "Traceback" not in log and "Error" not in log, log[-3000:]


def test_sigterm_waits_for_direct_requests_in_a_batch(repo_copy: Path) -> None:
    server = Server(repo_copy, "--max-batch-size", "8", "--batch-delay-ms", "400")
    assert httpx.post(server.url + PATH, content=body()).status_code == 200
    connections = [Connection(server) for _ in range(3)]
    try:
        for label, connection in enumerate(connections):
            connection.send(post(label))
        time.sleep(0.1)  # queued in the batcher, not yet run
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        replies = [c.reply() for c in connections]
    finally:
        for connection in connections:
            connection.__exit__()
    assert [r.label() for r in replies] == [0, 1, 2]
    assert all(r.headers["connection"] == "close" for r in replies)
    assert server.stop() == 0 and time.monotonic() - started < 10


@pytest.fixture
def repo_copy(tmp_path: Path, served_repo: Path) -> Path:
    repo = tmp_path / "models"
    shutil.copytree(served_repo, repo)
    return repo
