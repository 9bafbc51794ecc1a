"""The load generator behind ``mserve bench --server``.

Worker processes (one is rarely enough against a fast server: a Python client spends tens of
microseconds per request) each run an event loop holding their share of the connections, and
each connection sends one prebuilt request again and again, as perf_analyzer does by default:
the generator spends its time on the wire, not on encoding. HTTP/1.1 keep-alive requests go
out as prebuilt bytes and httptools parses the replies (httpx costs ~10x more per request, which
would measure the client); gRPC calls go through grpc.aio with the request serialized once.
Every worker runs the same wall-clock window, so their figures add up.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from .bench import Measurement
from .errors import EnvironmentProblem, UsageError
from .signature import V2_BY_DTYPE

if TYPE_CHECKING:
    from .bench import Array

PROTOCOLS = ("v2-json", "v2-binary", "tfserving", "grpc")
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_LIVE = "/inference.GRPCInferenceService/ServerLive"
START_DELAY_S = 0.3  # to connect and warm up before the window opens
PROCESS_START_S = 2.0  # more when worker processes start (Python, numpy, grpc imports)
STRAGGLER_S = 30.0  # a request still unanswered this long after the window ends is given up


@dataclass(frozen=True)
class Target:
    """What every request of a run is: prebuilt HTTP bytes, or a gRPC method and message."""

    host: str
    port: int
    http_request: bytes = b""
    grpc_method: str = ""
    grpc_message: bytes = b""


def default_workers(concurrency: int) -> int:
    """One process per 32 connections, at most one per core."""
    return max(1, min(os.cpu_count() or 1, math.ceil(concurrency / 32)))


def infer_target(
    url: str,
    protocol: str,
    *,
    model: str,
    version: int,
    inputs: dict[str, Array],
    dtypes: dict[str, str],
    grpc_port: int,
) -> Target:
    """The request ``protocol`` sends for one inference of ``model:version`` on ``inputs``."""
    host, port = _address(url)
    tensors = {
        name: (array, V2_BY_DTYPE.get(dtypes[name], "BYTES")) for name, array in inputs.items()
    }
    if protocol == "grpc":
        from .protocol import v2_grpc

        message = v2_grpc.encode_request(model, str(version), tensors)
        return Target(host, grpc_port, grpc_method=GRPC_INFER, grpc_message=message)
    if protocol == "tfserving":
        columns = {name: _json_values(array).tolist() for name, array in inputs.items()}
        path = f"/v1/models/{model}/versions/{version}:predict"
        return Target(host, port, _post(host, port, path, orjson.dumps({"inputs": columns})))
    path = f"/v2/models/{model}/versions/{version}/infer"
    if protocol in ("v2-json", "v2-binary"):
        from .protocol import v2

        binary = protocol == "v2-binary"
        body, length = v2.encode_request(tensors, binary=binary, binary_output=binary)
        if length is None:
            return Target(host, port, _post(host, port, path, body))
        extra = f"Inference-Header-Content-Length: {length}\r\n"
        request = _post(
            host, port, path, body, extra=extra, content_type="application/octet-stream"
        )
        return Target(host, port, request)
    raise UsageError(f"--protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")


def ceiling_target(target: Target) -> Target:
    """The cheapest request the same server answers: what the generator manages at best."""
    if target.grpc_method:
        return Target(target.host, target.port, grpc_method=GRPC_LIVE, grpc_message=b"")
    live = (f"GET /v2/health/live HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n\r\n").encode()
    return Target(target.host, target.port, live)


class LoadGenerator:
    """Runs loads; its worker processes start once and serve every step and round after."""

    def __init__(self) -> None:
        self._pool: Any = None
        self._size = 0

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def run(
        self, target: Target, *, concurrency: int, seconds: float, warmup: int = 1, workers: int = 1
    ) -> Measurement:
        """``concurrency`` connections keep one request each in flight for ``seconds``."""
        workers = max(1, min(workers, concurrency))
        shares = [concurrency // workers + (i < concurrency % workers) for i in range(workers)]
        if workers == 1:
            parts = [_worker(target, concurrency, seconds, warmup, time.time() + START_DELAY_S)]
        else:
            cold = self._processes(workers)
            start_at = time.time() + START_DELAY_S + (PROCESS_START_S if cold else 0.0)
            jobs = [
                self._pool.submit(_worker, target, share, seconds, warmup, start_at)
                for share in shares
            ]
            parts = [job.result() for job in jobs]
        latencies = [ns for part in parts for ns in part[0]]
        outcomes: Counter[str] = Counter()
        for part in parts:
            outcomes.update(part[1])
        window = max(p[3] for p in parts) - min(p[2] for p in parts)
        return Measurement(latencies, window, outcomes)

    def _processes(self, count: int) -> bool:
        """Make sure ``count`` worker processes exist; True if they have to start first."""
        import concurrent.futures
        import multiprocessing

        if self._size >= count:
            return False
        if self._pool is not None:
            self._pool.shutdown()
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        self._pool = concurrent.futures.ProcessPoolExecutor(count, mp_context=context)
        self._size = count
        return True


# -- a worker process ----------------------------------------------------------------------


def _worker(
    target: Target, connections: int, seconds: float, warmup: int, start_at: float
) -> tuple[list[int], Counter[str], float, float]:
    """Latencies and outcomes of ``connections`` connections over the window, and the window."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    return runner(_connections(target, connections, seconds, warmup, start_at))  # type: ignore[no-any-return]


async def _connections(
    target: Target, connections: int, seconds: float, warmup: int, start_at: float
) -> tuple[list[int], Counter[str], float, float]:
    latencies: list[int] = []
    outcomes: Counter[str] = Counter()
    end_at = start_at + seconds
    began: list[float] = []

    async def drive(connection: _Connection) -> None:
        for _ in range(warmup):
            await connection.send()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        began.append(time.time())
        clock, send = time.perf_counter_ns, connection.send
        while time.time() < end_at:
            before = clock()
            outcome = await send()
            if outcome == "ok":
                latencies.append(clock() - before)
            outcomes[outcome] += 1

    async def drive_all(open_connection: Any) -> None:
        opened = [await open_connection() for _ in range(connections)]
        tasks = [asyncio.ensure_future(drive(c)) for c in opened]
        try:
            await asyncio.wait(tasks, timeout=max(0.0, end_at - time.time()) + STRAGGLER_S)
            for task in tasks:
                if not task.done():  # its request never came back
                    task.cancel()
                    outcomes["timeout"] += 1
                elif (error := task.exception()) is not None:
                    raise error
        finally:
            for connection in opened:
                connection.close()

    if target.grpc_method:
        import grpc

        async with grpc.aio.insecure_channel(f"{target.host}:{target.port}") as channel:
            call = channel.unary_unary(
                target.grpc_method,
                request_serializer=lambda message: message,
                response_deserializer=lambda reply: reply,
            )
            await drive_all(lambda: _GrpcCalls(call, target.grpc_message).connect())
    else:
        await drive_all(lambda: _HttpConnection(target).connect())
    return latencies, outcomes, min(began, default=start_at), time.time()


class _Connection(Protocol):
    async def send(self) -> str: ...  # "ok", or the failure's status
    def close(self) -> None: ...


class _GrpcCalls:
    """Calls on the worker's one channel (gRPC multiplexes them on one HTTP/2 connection)."""

    def __init__(self, call: Any, message: bytes) -> None:
        self.call, self.message = call, message

    async def connect(self) -> _GrpcCalls:
        return self

    async def send(self) -> str:
        import grpc

        try:
            await self.call(self.message)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return "ok"

    def close(self) -> None:
        pass


class _HttpConnection:
    """One keep-alive connection sending the prebuilt request; replies parsed by httptools."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.done = False
        self.writer: asyncio.StreamWriter | None = None

    def on_message_complete(self) -> None:  # httptools' callback
        self.done = True

    async def connect(self) -> _HttpConnection:
        import httptools

        self.close()
        try:
            self.reader, self.writer = await asyncio.open_connection(
                self.target.host, self.target.port
            )
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot connect to {self.target.host}:{self.target.port}: {exc.strerror or exc}"
            ) from None
        self.parser = httptools.HttpResponseParser(self)
        return self

    async def send(self) -> str:
        import httptools

        self.done = False
        try:
            if self.writer is None:  # the server closed the last one: a new connection
                await self.connect()
            assert self.writer is not None
            self.writer.write(self.target.http_request)
            while not self.done:
                data = await self.reader.read(262144)
                if not data:
                    raise ConnectionError
                self.parser.feed_data(data)
        except (OSError, EnvironmentProblem, httptools.HttpParserError):
            self.close()
            await asyncio.sleep(0.01)  # a refusing server is not to be hammered
            return "connection"
        status = self.parser.get_status_code()
        return "ok" if 200 <= status < 300 else str(status)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- request bodies --------------------------------------------------------------------------


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"--server {url!r}: mserve bench speaks plain http://HOST:PORT")
    return parts.hostname, parts.port or 80


def _post(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    extra: str = "",
    content_type: str = "application/json",
) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _json_values(array: Array) -> Array:
    """Numbers as they are; strings as text; bytes as ``{"b64": ...}`` (TF Serving's form)."""
    import numpy as np

    if array.dtype != object:
        return array
    values: Array = np.vectorize(
        lambda v: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else str(v),
        otypes=[object],
    )(array)
    return values
