"""The HTTP side of the server: a plain ASGI application (no framework: routing a handful of
fixed path shapes by hand is faster than any router, and the hot path is what the throughput
target measures).

Every error is ``{"error": "..."}`` with the status of PROTOCOLS.md; a bug answers 500 with a
generic message and is logged; no traceback, path or internal name reaches a client.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sys
import time
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import orjson

from mserve.errors import (
    InputError,
    MethodNotAllowed,
    MserveError,
    NotFoundError,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
)
from mserve.reference import check_label, check_model_name, parse_version

from . import tfserving, v2
from .admin import Admin
from .batching import Inline, make_executor, rows_of
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .models import ModelManager, ServedVersion
from .settings import ServerSettings

log = logging.getLogger("mserve.server")
JSON = b"application/json"
Scope = dict[str, Any]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
MAX_CACHED_ROUTES = 4096
_REQUEST_ID = re.compile(rb"[!-~]+")


class _Disconnected(Exception):
    pass


@dataclass
class _Stats:
    """Triton's statistics extension for one version (counts and nanoseconds)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    rows: int = 0
    last_ms: int = 0


@dataclass(frozen=True)
class _Route:
    """An inference URL routed once, so later requests skip parsing it (and, through
    http.py, ASGI): its protocol and what it names. A label is resolved per request."""

    protocol: str  # "v2" or "tfserving"
    path: str
    model: str
    version: int | None = None
    label: str | None = None


@dataclass
class _TfRequest:
    feeds: dict[str, Any]
    row_form: bool  # TF Serving's "instances" form, which shapes the reply


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    model: str = ""
    version: str = ""


class MserveApp:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.manager = ModelManager(settings, self._executor)
        self.metrics.watch(self.manager)
        self.ready = False
        self.draining = False
        self.stats: dict[tuple[str, int], _Stats] = {}
        self._ids = itertools.count(1)
        self.version = package_version("mserve")
        self.admin = Admin(
            settings.admin_token, self.manager, f"admin API on {settings.host}:{settings.port}"
        )
        self.extensions = EXTENSIONS + (["model_repository"] if self.admin.enabled else [])
        self._grpc: Any = None
        self._infer_routes: dict[str, _Route] = {}

    def _executor(self, model: str, version: int, runner: Any, settings: Any) -> Any:
        return make_executor(runner, settings, self.metrics.observer(model, str(version)))

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.manager.start)
                    if self.settings.grpc_port:
                        from . import grpc

                        self._grpc = await grpc.start(
                            self, self.settings.host, self.settings.grpc_port
                        )
                except Exception as exc:  # reported to uvicorn, which then exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.ready = False
                if self._grpc is not None:
                    await self._grpc.stop(self.settings.shutdown_grace_s)
                await asyncio.get_running_loop().run_in_executor(None, self.manager.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        scope["mserve.headers"] = headers = dict(scope["headers"])  # names arrive lower-case
        try:
            reply = await self._route(scope, receive, started)
        except _Disconnected:
            return
        except Exception as exc:
            reply = self._failure(exc, scope["method"], scope["path"])
        status, head, body = self._answer(reply, headers, scope["method"], scope["path"], started)
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    def _failure(self, exc: Exception, method: str, path: str) -> _Reply:
        if isinstance(exc, MserveError):
            return _Reply(exc.http_status, orjson.dumps({"error": exc.message}))
        # A bug: log it, tell the client only that it happened.
        log.error("internal error on %s %s", method, path, exc_info=exc)
        return _Reply(500, b'{"error":"internal server error"}')

    def _answer(
        self, reply: _Reply, headers: dict[bytes, bytes], method: str, path: str, started: float
    ) -> Answer:
        """Status, headers and body of a reply (both HTTP paths), with its access-log line."""
        # The client's id (for tracing across services) is echoed, so it is capped and must be
        # printable ASCII.
        request_id = headers.get(b"x-request-id")
        if request_id is None or not _REQUEST_ID.fullmatch(request_id := bytes(request_id[:128])):
            request_id = str(next(self._ids)).encode()
        if reply.status == 503:  # overload, not ready, draining: all worth retrying
            reply.headers = ((b"retry-after", b"1"),)
        elif reply.status == Unauthorized.http_status:
            reply.headers = ((b"www-authenticate", b"Bearer"),)
        head = [
            (b"content-type", reply.content_type),
            (b"content-length", str(len(reply.body)).encode()),
            (b"x-request-id", request_id),
            *reply.headers,
        ]
        if self.settings.access_log:
            self._access_log(method, path, reply, request_id, started)
        return reply.status, head, reply.body

    def _access_log(
        self, method: str, path: str, reply: _Reply, request_id: bytes, started: float
    ) -> None:
        line = {
            "ts": round(time.time(), 3),
            "id": request_id.decode(errors="replace"),
            "method": method,
            "path": path,
            "status": reply.status,
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if reply.model:
            line["model"], line["version"] = reply.model, reply.version
        sys.stderr.buffer.write(orjson.dumps(line) + b"\n")
        sys.stderr.flush()

    # -- the direct path (http.py): inference without ASGI -----------------------------------

    def direct_route(self, target: bytes) -> str | None:
        """The path of an inference route seen before, if TARGET (a request's raw target) is
        one. A raw target equal to a cached path has no query and no percent-escapes."""
        path = target.decode("latin-1")
        return path if path in self._infer_routes else None

    def infer_direct(
        self, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None, started: float
    ) -> Answer | Coroutine[Any, Any, Answer]:
        """Answer at once when the version runs inline; else return a coroutine that answers
        once its batch has run. BODY is None when it was over the size limit."""
        head = dict(headers)
        route = self._infer_routes[path]
        try:
            served = self.manager.resolve(route.model, route.version, route.label)
        except MserveError as exc:
            return self._answer(self._failure(exc, "POST", path), head, "POST", path, started)
        try:
            if body is None:
                limit = self.settings.max_body_bytes
                raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
            request = self._decode(route, served, head, self._inflate(head, body))
            if not isinstance(served.executor, Inline):
                return self._infer_later(route, served, request, head, started)
            outputs = served.executor.run_now(request.feeds)
            reply = self._reply(route, served, request, outputs, started)
        except Exception as exc:
            reply = self._failed(route, served, exc, started)
        return self._answer(reply, head, "POST", path, started)

    async def _infer_later(
        self,
        route: _Route,
        served: ServedVersion,
        request: Any,
        headers: dict[bytes, bytes],
        started: float,
    ) -> Answer:
        try:
            outputs = await served.executor.run(request.feeds)
            reply = self._reply(route, served, request, outputs, started)
        except Exception as exc:
            reply = self._failed(route, served, exc, started)
        return self._answer(reply, headers, "POST", route.path, started)

    def _failed(
        self, route: _Route, served: ServedVersion, exc: Exception, started: float
    ) -> _Reply:
        if isinstance(exc, MserveError):
            self.count(served, route.protocol, exc, started)
        return self._failure(exc, "POST", route.path)

    # -- routing ----------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Any, started: float) -> _Reply:
        method, path = scope["method"], scope["path"]
        known = self._infer_routes.get(path) if method == "POST" else None
        if known is not None:  # the hot path: an inference URL seen before
            return await self._infer(known, scope, receive, started)
        parts = [p for p in path.split("/") if p]
        if path in ("/metrics", "/monitoring/prometheus/metrics"):
            MethodNotAllowed.unless(method, "GET")
            return _Reply(200, self.metrics.render(), METRICS_CONTENT_TYPE.encode())
        if parts[:1] == ["v2"] and parts[1:2] != ["repository"]:
            return await self._v2(method, parts[1:], scope, receive, started)
        if parts[:1] == ["admin"] or parts[:2] == ["v2", "repository"]:
            self.admin.authorize(_header(scope, b"authorization"))
            body = await self._body(scope, receive)
            if parts[0] == "admin":
                status, data = await self.admin.admin(method, parts[1:], body)
            else:
                status, data = await self.admin.repository(method, parts[2:], body)
            return _Reply(status, orjson.dumps(data))
        if parts[:2] == ["v1", "models"] and len(parts) >= 3:
            return await self._v1(method, parts[2:], scope, receive, started)
        raise NotFoundError(f"no route for {path}")

    async def _v2(
        self, method: str, parts: list[str], scope: Scope, receive: Any, started: float
    ) -> _Reply:
        if not parts:
            MethodNotAllowed.unless(method, "GET")
            return _json({"name": "mserve", "version": self.version, "extensions": self.extensions})
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            MethodNotAllowed.unless(method, "GET")
            if parts[1] == "live":
                return _json({"live": True})
            ready = self.ready and not self.draining
            return _Reply(200 if ready else 503, orjson.dumps({"ready": ready}))
        if parts[0] != "models":
            raise NotFoundError(f"no route for /v2/{'/'.join(parts)}")
        if parts[1:] in ([], ["stats"]):
            MethodNotAllowed.unless(method, "GET")
            return self._models() if len(parts) == 1 else _json(self.statistics(None, None))
        model = _model(parts[1])
        rest = parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise NotFoundError("no route: /versions needs a version number")
            version = _version(rest[1])
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "config", "infer", "stats"):
            raise NotFoundError(f"no route for /v2/{'/'.join(parts)}")
        if action == "infer":
            MethodNotAllowed.unless(method, "POST")
            route = _Route("v2", scope["path"], model, version)
            return await self._first_infer(route, scope, receive, started)
        MethodNotAllowed.unless(method, "GET")
        if action == "stats":
            return _json(self.statistics(model, version))
        if action == "ready":
            try:
                served = self.manager.resolve(model, version)
            except NotReady:
                return _Reply(503, orjson.dumps({"name": model, "ready": False}))
            return _json({"name": served.model, "ready": True})
        served = self.manager.resolve(model, version)
        if action == "config":
            return _json(v2.config(served))
        versions = [version] if version is not None else self.versions(model)
        return _json(v2.metadata(served, versions))

    async def _first_infer(
        self, route: _Route, scope: Scope, receive: Any, started: float
    ) -> _Reply:
        """An inference URL seen for the first time: remembered once it names something served
        (so unknown names cannot fill the cache), then answered like any other."""
        self.manager.resolve(route.model, route.version, route.label)
        if len(self._infer_routes) < MAX_CACHED_ROUTES:
            self._infer_routes[route.path] = route
        return await self._infer(route, scope, receive, started)

    async def _infer(self, route: _Route, scope: Scope, receive: Any, started: float) -> _Reply:
        served = self.manager.resolve(route.model, route.version, route.label)
        try:
            body = await self._body(scope, receive)
            request = self._decode(route, served, scope["mserve.headers"], body)
            outputs = await served.executor.run(request.feeds)
            return self._reply(route, served, request, outputs, started)
        except MserveError as exc:
            self.count(served, route.protocol, exc, started)
            raise

    @staticmethod
    def _decode(
        route: _Route, served: ServedVersion, headers: dict[bytes, bytes], body: bytes
    ) -> v2.InferRequest | _TfRequest:
        if route.protocol == "v2":
            length = _int_header(headers.get(v2.HEADER_LENGTH))
            return v2.decode(body, length, served.signature, served.input_plan)
        return _TfRequest(*tfserving.decode(body, served))

    def _reply(
        self, route: _Route, served: ServedVersion, request: Any, outputs: list[Any], started: float
    ) -> _Reply:
        """Encode an answer and count the request as a success."""
        header_length = None
        if route.protocol == "v2":
            payload, header_length = v2.encode(served, request, outputs)
        else:
            payload = tfserving.encode(served, outputs, request.row_form)
        self.count(served, route.protocol, None, started, rows_of(request.feeds))
        version = served.version_text
        if header_length is None:
            return _Reply(200, payload, model=served.model, version=version)
        return _Reply(
            200,
            payload,
            b"application/octet-stream",
            ((v2.HEADER_LENGTH, str(header_length).encode()),),
            served.model,
            version,
        )

    async def _v1(
        self, method: str, parts: list[str], scope: Scope, receive: Any, started: float
    ) -> _Reply:
        verb = ""
        if ":" in parts[-1]:
            parts[-1], verb = parts[-1].split(":", 1)
        model = _model(parts[0])
        rest = parts[1:]
        version, label = None, None
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = _version(rest[1]), rest[2:]
        elif rest[:1] == ["labels"] and len(rest) >= 2:
            label, rest = _label(rest[1]), rest[2:]
        if verb:
            if verb != "predict" or rest:
                raise NotFoundError(f"no route for :{verb}" if verb != "predict" else "no route")
            MethodNotAllowed.unless(method, "POST")
            route = _Route("tfserving", scope["path"], model, version, label)
            return await self._first_infer(route, scope, receive, started)
        MethodNotAllowed.unless(method, "GET")
        if rest == ["metadata"]:
            return _json(tfserving.metadata(self.manager.resolve(model, version, label)))
        if rest:
            raise NotFoundError(f"no route for /v1/models/{'/'.join(parts)}")
        statuses = self.manager.snapshot.status.get(model)
        if statuses is None:
            raise NotFoundError(f"model '{model}' not found")
        if label is not None:
            version = self.manager.resolve(model, label=label).version
        chosen = [s for n, s in sorted(statuses.items()) if version is None or n == version]
        if not chosen:
            raise NotFoundError(f"model '{model}' has no version {version}")
        return _json(tfserving.status(chosen))

    # -- pieces -----------------------------------------------------------------------------

    async def _body(self, scope: Scope, receive: Any) -> bytes:
        limit = self.settings.max_body_bytes
        declared = _int_header(_header(scope, b"content-length"))
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._inflate(scope["mserve.headers"], body)

    def _inflate(self, headers: dict[bytes, bytes], body: bytes) -> bytes:
        encoding = headers.get(b"content-encoding")
        if encoding in (None, b"identity"):
            return body
        if encoding not in (b"gzip", b"deflate"):
            raise InputError(f"unsupported Content-Encoding {encoding.decode(errors='replace')}")
        limit = self.settings.max_body_bytes
        inflater = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15)
        try:
            inflated = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise InputError(f"the body is not valid {encoding.decode()} data") from None
        if len(inflated) > limit:
            raise PayloadTooLarge(f"the decompressed body is over the {limit}-byte limit")
        return inflated

    def count(
        self,
        served: ServedVersion,
        protocol: str,
        error: MserveError | None,
        started: float,
        rows: int = 0,
    ) -> None:
        seconds = time.perf_counter() - started
        outcome = "ok" if error is None else str(error.http_status)
        self.metrics.request(served.model, served.version_text, protocol, outcome, seconds)
        key = (served.model, served.version)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = _Stats()
        nanoseconds = int(seconds * 1e9)
        if error is None:
            stats.success += 1
            stats.success_ns += nanoseconds
            stats.rows += rows
        else:
            stats.fail += 1
            stats.fail_ns += nanoseconds
        stats.last_ms = int(time.time() * 1000)

    def _models(self) -> _Reply:
        snapshot = self.manager.snapshot
        models = [
            {
                "name": name,
                "versions": [str(v) for v in sorted(snapshot.served.get(name, {}))],
                "labels": snapshot.labels.get(name, {}),
                "ready": bool(snapshot.served.get(name)),
            }
            for name in sorted(snapshot.status)
        ]
        return _json({"models": models})

    def statistics(self, model: str | None, version: int | None) -> dict[str, Any]:
        """Triton's statistics extension, for one version, one model or all (REST and gRPC)."""
        snapshot = self.manager.snapshot
        if model is not None and model not in snapshot.served:
            raise NotFoundError(f"model '{model}' not found")
        entries = []
        for name, versions in sorted(snapshot.served.items()):
            for number in sorted(versions):
                if (model, version) != (None, None) and (
                    name != model or (version is not None and number != version)
                ):
                    continue
                s = self.stats.get((name, number), _Stats())
                entries.append(
                    {
                        "name": name,
                        "version": str(number),
                        "last_inference": s.last_ms,
                        "inference_count": s.rows,
                        "execution_count": s.success,
                        "inference_stats": {
                            "success": {"count": s.success, "ns": s.success_ns},
                            "fail": {"count": s.fail, "ns": s.fail_ns},
                        },
                    }
                )
        if model is not None and version is not None and not entries:
            raise NotFoundError(f"model '{model}' has no version {version} being served")
        return {"model_stats": entries}

    def versions(self, model: str) -> list[int]:
        return sorted(self.manager.snapshot.served.get(model, {}))


def create_app(settings: ServerSettings) -> MserveApp:
    return MserveApp(settings)


def _json(data: Any) -> _Reply:
    return _Reply(200, orjson.dumps(data))


def _header(scope: Scope, name: bytes) -> bytes | None:
    value = scope["mserve.headers"].get(name)
    return None if value is None else bytes(value)


def _int_header(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError("a numeric header is not a number") from None


def _model(text: str) -> str:
    try:
        return check_model_name(text)
    except MserveError:
        raise NotFoundError(f"model '{text[:64]}' not found") from None


def _version(text: str) -> int:
    try:
        return parse_version(text)
    except MserveError as exc:
        raise InputError(exc.message) from None


def _label(text: str) -> str:
    try:
        return check_label(text)
    except MserveError as exc:
        raise InputError(exc.message) from None
