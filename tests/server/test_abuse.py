"""Hostile clients: connections past the cap, requests that never finish arriving, a Host that
is not ours (DNS rebinding), a browser at the admin API, and the shutdown grace. Real servers,
raw sockets; every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, wait_until
from tests.slow_model import publish_slow

from .test_http2 import RawConnection

pytestmark = pytest.mark.slow
ROW = [5.1, 3.5, 1.4, 0.2]
IRIS = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def _reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_connections_past_the_cap_are_refused_with_an_answer(served_repo: Path) -> None:
    server = Server(served_repo, "--max-connections", "8")
    held = [_connect(server) for _ in range(8)]
    try:
        assert wait_until(lambda: _refused(server), timeout=10)
        with _connect(server) as extra:
            extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = _reply(extra)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert answer.endswith(b'{"error":"too many connections; retry later"}')
        with RawConnection(server) as refused:
            goaway = [f for f in refused.frames() if f[0] == 7]  # until the server closes
        assert goaway and int.from_bytes(goaway[0][3][4:8], "big") == 11  # ENHANCE_YOUR_CALM
        assert goaway[0][3][8:] == b"too many connections"
    finally:
        for sock in held:
            sock.close()
    # Their places free again once they close.
    assert wait_until(lambda: _live(server), timeout=10)
    assert server.stop() == 0
    assert server.stderr().count("connection(s) refused") == 1  # logged once, not per refusal


def _refused(server: Server) -> bool:
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return _reply(sock).startswith(b"HTTP/1.1 503")


def _live(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/v2/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_requests_that_never_finish_arriving_get_408_and_are_closed(served_repo: Path) -> None:
    server = Server(served_repo, "--read-timeout", "1")
    try:
        with _connect(server) as silent, _connect(server) as partial:
            partial.sendall(
                b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            answer = _reply(partial)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert answer.endswith(b'{"error":"the request did not arrive within 1 s"}')
            assert _reply(silent) == b""  # closed: nothing was asked, nothing is answered
        # A request that arrives in time on a kept-alive connection is untouched.
        with httpx.Client(base_url=server.url) as client:
            assert client.post("/v2/models/iris/infer", json=IRIS).status_code == 200
            time.sleep(1.5)  # idle between requests is keep-alive's business, not the deadline's
            assert client.get("/v2/health/live").status_code == 200
    finally:
        assert server.stop() == 0


def test_a_grpc_call_whose_message_never_comes_ends_deadline_exceeded(served_repo: Path) -> None:
    from hpack import Decoder, Encoder

    server = Server(served_repo, "--read-timeout", "1")
    try:
        with RawConnection(server) as connection:
            headers = Encoder().encode(
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/inference.GRPCInferenceService/ModelInfer"),
                    (":authority", "localhost"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ]
            )
            connection.send(1, 4, 1, headers)  # HEADERS, END_HEADERS; the DATA never comes
            trailers = next(f for f in connection.frames() if f[0] == 1 and f[2] == 1)
        fields = dict(Decoder().decode(trailers[3]))
        assert fields["grpc-status"] == "4"  # DEADLINE_EXCEEDED
        assert "did not arrive within 1 s" in fields["grpc-message"].replace("%20", " ")
    finally:
        assert server.stop() == 0


def test_half_sent_requests_cannot_take_the_descriptors(served_repo: Path) -> None:
    server = Server(served_repo, "--max-connections", "100", "--read-timeout", "2")
    pid = server.process.pid
    before = _open_files(pid)
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            try:
                sock = _connect(server)
                sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: localhost\r\n")
                flood.append(sock)
            except OSError:
                pass
        # the cap, the refused ones waiting for their answer to arrive, and no more
        assert _open_files(pid) < before + 100 + 64 + 16
        # The deadline clears them; the server answers again without anyone closing them.
        assert wait_until(lambda: _live(server), timeout=15)
    finally:
        for sock in flood:
            sock.close()
        assert server.stop() == 0


def test_only_our_hosts_are_answered(served_repo: Path) -> None:
    server = Server(served_repo, "--allowed-host", "models.example.com")
    try:
        infer = f"{server.url}/v2/models/iris/infer"
        assert httpx.post(infer, json=IRIS).status_code == 200  # the route is known: fast path
        for host in ("rebind.attacker.example", "models.example.com.evil.example"):
            for reply in (
                httpx.get(f"{server.url}/v2/health/ready", headers={"host": host}),
                httpx.post(infer, json=IRIS, headers={"host": host}),
            ):
                assert reply.status_code == 400
                assert reply.json()["error"].startswith(
                    f"this server does not answer for host '{host}'"
                )
        for host in (
            "localhost",
            f"localhost:{server.port}",
            f"127.0.0.1:{server.port}",
            "[::1]",
            "models.example.com:443",
            "MODELS.example.com",
        ):
            assert httpx.post(infer, json=IRIS, headers={"host": host}).status_code == 200, host
    finally:
        assert server.stop() == 0


def test_browsers_are_refused_at_the_admin_api(served_repo: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    server = Server(served_repo, "--admin-token-file", str(token))
    auth = {"authorization": "Bearer s3cret-token-0123456789"}
    try:
        assert httpx.get(f"{server.url}/admin/models", headers=auth).status_code == 200
        refused = httpx.get(
            f"{server.url}/admin/models", headers={**auth, "origin": "http://localhost:3000"}
        )
        assert refused.status_code == 403
        assert refused.json() == {"error": "the admin API does not answer requests from web pages"}
        # Inference is for anyone who can reach it, browsers included.
        infer = httpx.post(
            f"{server.url}/v2/models/iris/infer", json=IRIS, headers={"origin": "http://x"}
        )
        assert infer.status_code == 200
    finally:
        assert server.stop() == 0


def test_the_shutdown_grace_bounds_the_drain(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    publish_slow(repo)
    server = Server(repo, "--shutdown-grace", "1", "--timeout", "600")
    replies: list[Any] = []

    def slow() -> None:
        body = {"inputs": [{"name": "steps", "shape": [1], "datatype": "INT64", "data": [10**9]}]}
        try:
            replies.append(httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=60))
        except httpx.HTTPError as exc:
            replies.append(exc)

    caller = threading.Thread(target=slow)
    caller.start()
    time.sleep(0.5)
    stopped = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)  # the request would run for minutes
    assert time.monotonic() - stopped < 20
    caller.join(30)
    server.stop()
    # The request was cut short: no answer, or not a successful one.
    answered = replies and isinstance(replies[0], httpx.Response)
    assert replies and not (answered and replies[0].status_code == 200)


def test_an_idle_grpc_connection_is_told_to_go_away(served_repo: Path) -> None:
    server = Server(served_repo, "--read-timeout", "1")
    try:
        with RawConnection(server) as idle:
            idle.send(4, 0, 0)  # SETTINGS, then nothing: no call, ever
            goaway = [f for f in idle.frames() if f[0] == 7]  # until the server closes
        assert goaway and int.from_bytes(goaway[0][3][4:8], "big") == 0  # NO_ERROR
    finally:
        assert server.stop() == 0


def test_a_compressed_body_is_never_judged_cheap(inprocess: Any) -> None:
    """A small gzip body may inflate to the body limit, so it never runs on the event loop."""
    routes = inprocess.server.rest.routes
    assert routes.size({}, b"x" * 100) == 100
    assert routes.size({b"content-encoding": b"gzip"}, b"x" * 100) == routes.limit
    assert routes.size({b"content-encoding": b"identity"}, b"x" * 100) == 100
