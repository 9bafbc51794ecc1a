"""The HTTP edge: a plain ASGI application, and the two hooks of the fast path.

Every error becomes ``{"error": "..."}`` with the status of PROTOCOLS.md; anything unexpected
answers 500 with a generic message and one log line, so no traceback, path or internal name
reaches a client. Every reply carries a request id and gets an access-log line.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson

from mserve.errors import MserveError, Unauthorized, UnknownHost

from ..admin import Admin
from ..dataplane import DataPlane
from ..settings import ServerSettings
from .access_log import AccessLog
from .hosts import HostCheck
from .routes import Disconnected, Reply, Routes, Scope

log = logging.getLogger("mserve.server")
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
_REQUEST_ID = re.compile(rb"[!-~]+")
INTERNAL = b'{"error":"internal server error"}'


class RestApp:
    def __init__(
        self,
        settings: ServerSettings,
        plane: DataPlane,
        admin: Admin,
        server_version: str,
    ) -> None:
        self.settings = settings
        self.plane = plane
        self.routes = Routes(plane, admin, settings, server_version)
        stream = sys.stdout.buffer if settings.json_logs else sys.stderr.buffer
        self.access_log = AccessLog(stream) if settings.access_log else None
        self.host_allowed = HostCheck(settings.host, settings.allowed_hosts)
        # What lifespan runs (the composition root sets them: loading models, gRPC).
        self.on_startup: Callable[[], Awaitable[None]] | None = None
        self.on_shutdown: Callable[[], Awaitable[None]] | None = None
        self._ids = itertools.count(1)

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
                    if self.on_startup is not None:
                        await self.on_startup()
                except Exception as exc:  # reported to uvicorn, which then exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    await self.on_shutdown()
                if self.access_log is not None:
                    self.access_log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        scope["mserve.headers"] = headers = dict(scope["headers"])  # names arrive lower-case
        try:
            self.check_host(headers)
            reply = await self.routes.handle(scope, receive, started)
        except Disconnected:
            return
        except Exception as exc:
            reply = self.failure(exc, scope["method"], scope["path"])
        status, head, body = self.answer(reply, headers, scope["method"], scope["path"], started)
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    def check_host(self, headers: dict[bytes, bytes]) -> None:
        host = headers.get(b"host")
        if not self.host_allowed(host):
            assert host is not None
            name = host[:64].decode("latin-1")
            raise UnknownHost(
                f"this server does not answer for host {name!r}; "
                f"start it with --allowed-host {name.rpartition(':')[0] or name}"
            )

    def failure(self, exc: Exception, method: str, path: str) -> Reply:
        if isinstance(exc, MserveError):
            # The repository's messages name its location for the CLI; a client never sees it.
            message = self.plane.manager.redact(exc.message)
            reply = Reply(exc.http_status, orjson.dumps({"error": message}))
            reply.version = exc.model_version
            return reply
        # A bug: logged for the operator; the client learns only that it happened.
        log.error("internal error on %s %s", method, path, exc_info=exc)
        return Reply(500, INTERNAL)

    def answer(
        self, reply: Reply, headers: dict[bytes, bytes], method: str, path: str, started: float
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
        if reply.version:  # the version that answered (a canary may choose either)
            head.append((b"mserve-model-version", reply.version.encode()))
        if self.access_log is not None:
            self.access_log.write(
                method, path, reply.status, request_id, started, reply.model, reply.version
            )
        return reply.status, head, reply.body

    # -- the fast path (fastpath.py): inference without ASGI ---------------------------------

    def direct_route(self, target: bytes) -> str | None:
        """The path of an inference route seen before, if TARGET (a request's raw target) is
        one. A raw target equal to a cached path has no query and no percent-escapes."""
        path = target.decode("latin-1")
        return path if path in self.routes.infer_routes else None

    def infer_direct(
        self, path: str, headers: list[tuple[bytes, bytes]], body: bytes | None, started: float
    ) -> Answer | Coroutine[Any, Any, Answer]:
        """Answer at once when the request is cheap (see DataPlane.runs_now); else return a
        coroutine that answers once it has run. BODY is None when it was over the size limit."""
        head = dict(headers)
        route = self.routes.infer_routes[path]
        try:
            if head.get(b"host") not in self.host_allowed.known:
                self.check_host(head)
            plane = self.plane
            served = plane.resolve(route.model, route.version, route.label)
            canary = plane.canary(route.model, route.version, route.label)
            if canary is not None:
                served = canary.pick(head.get(canary.header) if canary.header else None)
            decode, encode = self.routes.codec(route, head, body)
            size = self.routes.size(head, body)
            if not plane.runs_now(served, size):
                apart = self.routes.apart(route, head, body)
                later = plane.infer(
                    served,
                    route.protocol,
                    started,
                    decode,
                    encode,
                    size=size,
                    apart=apart,
                    route=canary,
                )
                return self._answer_later(later, head, path, started)
            reply = plane.infer_now(served, route.protocol, started, decode, encode, route=canary)
        except Exception as exc:
            reply = self.failure(exc, "POST", path)
        return self.answer(reply, head, "POST", path, started)

    async def _answer_later(
        self, later: Awaitable[Reply], headers: dict[bytes, bytes], path: str, started: float
    ) -> Answer:
        try:
            reply = await later
        except Exception as exc:
            reply = self.failure(exc, "POST", path)
        return self.answer(reply, headers, "POST", path, started)
