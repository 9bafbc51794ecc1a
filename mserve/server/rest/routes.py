"""REST routes: URL parsing, bodies and their limits, and the call into the data plane, the admin
operations, the views or the codecs. No framework: routing a handful of fixed path shapes by
hand is faster than any router, and an inference URL is parsed once and remembered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from mserve.errors import (
    BrowserRefused,
    InputError,
    MethodNotAllowed,
    NotFoundError,
    PayloadTooLarge,
)
from mserve.protocol import tfserving, v2
from mserve.protocol.compression import inflate
from mserve.reference import check_label

from .. import openapi, views
from ..admin import Admin
from ..apart import APART_BYTES, Apart, Processes
from ..dataplane import DataPlane, model_of, version_of
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..served import ServedVersion
from ..settings import ServerSettings

if TYPE_CHECKING:
    from ..workers import Siblings

JSON = b"application/json"
MAX_CACHED_ROUTES = 4096
Scope = dict[str, Any]


class Disconnected(Exception):
    """The client went away before its body arrived."""


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    model: str = ""
    version: str = ""


@dataclass(frozen=True)
class InferRoute:
    """An inference URL routed once, so later requests skip parsing it (and, through the fast
    path, ASGI): its protocol, verb and what it names. A label is resolved per request."""

    protocol: str  # "v2" or "tfserving"
    verb: str  # "infer", or TF Serving's predict, classify or regress
    path: str
    model: str
    version: int | None = None
    label: str | None = None


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(data))


class Routes:
    def __init__(
        self, plane: DataPlane, admin: Admin, settings: ServerSettings, server_version: str
    ) -> None:
        self.plane = plane
        self.admin = admin
        self.limit = settings.max_body_bytes
        extensions = ["binary_tensor_data", "model_configuration", "statistics"]
        if admin.enabled:
            extensions.append("model_repository")
        self.server_metadata = {
            "name": "mserve",
            "version": server_version,
            "extensions": extensions,
        }
        self.infer_routes: dict[str, InferRoute] = {}
        self.processes = Processes()  # where large JSON is handled (apart.py)
        self.openapi = openapi.render(server_version)
        self.siblings: Siblings | None = None  # the other workers (workers.py), if any

    def from_sibling(self, scope: Scope) -> bool:
        """Whether a request came from another worker: over this worker's Unix socket (a
        server address without a port), in a folder only this user may open."""
        server = scope.get("server")
        return self.siblings is not None and server is not None and server[1] is None

    async def handle(self, scope: Scope, receive: Any, started: float) -> Reply:
        method, path = scope["method"], scope["path"]
        known = self.infer_routes.get(path) if method == "POST" else None
        if known is not None:  # an inference URL seen before
            return await self.infer(
                known, scope["mserve.headers"], await self.body(scope, receive), started
            )
        parts = [p for p in path.split("/") if p]
        if path in openapi.PATHS:
            MethodNotAllowed.unless(method, "GET")
            return Reply(200, self.openapi)
        if path in ("/metrics", "/monitoring/prometheus/metrics"):
            MethodNotAllowed.unless(method, "GET")
            metrics = self.plane.metrics.render()
            if self.siblings is not None and not self.from_sibling(scope):
                metrics = await self.siblings.metrics(metrics)  # a scrape sees every worker
            return Reply(200, metrics, METRICS_CONTENT_TYPE.encode())
        if parts[:2] == ["_worker", "refresh"] and len(parts) == 3 and self.from_sibling(scope):
            MethodNotAllowed.unless(method, "POST")
            await asyncio.to_thread(self.plane.manager.refresh, model_of(parts[2]))
            return json_reply({})
        if parts[:1] == ["v2"] and parts[1:2] != ["repository"]:
            return await self._v2(method, parts[1:], scope, receive, started)
        if parts[:1] == ["admin"] or parts[:2] == ["v2", "repository"]:
            if b"origin" in scope["mserve.headers"]:  # only browsers send one
                raise BrowserRefused("the admin API does not answer requests from web pages")
            self.admin.authorize(scope["mserve.headers"].get(b"authorization"))
            body = await self.body(scope, receive)
            if parts[0] == "admin":
                status, data = await self.admin.admin(method, parts[1:], body)
            else:
                status, data = await self.admin.repository(method, parts[2:], body)
            return json_reply(data, status)
        if parts[:2] == ["v1", "models"] and len(parts) >= 3:
            return await self._v1(method, parts[2:], scope, receive, started)
        raise NotFoundError(f"no route for {path}")

    async def _v2(
        self, method: str, parts: list[str], scope: Scope, receive: Any, started: float
    ) -> Reply:
        plane = self.plane
        if not parts:
            MethodNotAllowed.unless(method, "GET")
            return json_reply(self.server_metadata)
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            MethodNotAllowed.unless(method, "GET")
            if parts[1] == "live":
                return json_reply({"live": True})
            return json_reply({"ready": plane.ready}, 200 if plane.ready else 503)
        if parts[0] != "models":
            raise NotFoundError(f"no route for /v2/{'/'.join(parts)}")
        if parts[1:] in ([], ["stats"]):
            MethodNotAllowed.unless(method, "GET")
            return json_reply(
                views.models(plane) if len(parts) == 1 else views.statistics(plane, None, None)
            )
        model = model_of(parts[1])
        rest = parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise NotFoundError("no route: /versions needs a version number")
            version = version_of(rest[1])
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "ready", "config", "infer", "stats"):
            raise NotFoundError(f"no route for /v2/{'/'.join(parts)}")
        if action == "infer":
            MethodNotAllowed.unless(method, "POST")
            route = InferRoute("v2", "infer", scope["path"], model, version)
            return await self._first_infer(route, scope, receive, started)
        MethodNotAllowed.unless(method, "GET")
        if action == "stats":
            return json_reply(views.statistics(plane, model, version))
        if action == "ready":
            ready = plane.model_ready(model, version)
            return json_reply({"name": model, "ready": ready}, 200 if ready else 503)
        served = plane.resolve(model, version)
        if action == "config":
            return json_reply(views.model_config(served))
        versions = [version] if version is not None else plane.versions(model)
        return json_reply(views.model_metadata(served, versions))

    async def _v1(
        self, method: str, parts: list[str], scope: Scope, receive: Any, started: float
    ) -> Reply:
        verb = ""
        if ":" in parts[-1]:
            parts[-1], verb = parts[-1].split(":", 1)
        model = model_of(parts[0])
        rest = parts[1:]
        version, label = None, None
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = version_of(rest[1]), rest[2:]
        elif rest[:1] == ["labels"] and len(rest) >= 2:
            label, rest = check_label(rest[1]), rest[2:]
        if verb:
            if verb not in tfserving.VERBS or rest:
                raise NotFoundError(f"no route for {scope['path']}")
            MethodNotAllowed.unless(method, "POST")
            route = InferRoute("tfserving", verb, scope["path"], model, version, label)
            return await self._first_infer(route, scope, receive, started)
        MethodNotAllowed.unless(method, "GET")
        if rest == ["metadata"]:
            return json_reply(views.tf_metadata(self.plane.resolve(model, version, label)))
        if rest:
            raise NotFoundError(f"no route for /v1/models/{'/'.join(parts)}")
        return json_reply(views.tf_status(self.plane, model, version, label))

    # -- inference --------------------------------------------------------------------------

    async def _first_infer(
        self, route: InferRoute, scope: Scope, receive: Any, started: float
    ) -> Reply:
        """An inference URL seen for the first time: remembered once it names something served
        (so unknown names cannot fill the cache), then answered like any other."""
        self.plane.resolve(route.model, route.version, route.label)
        if len(self.infer_routes) < MAX_CACHED_ROUTES:
            self.infer_routes[route.path] = route
        return await self.infer(
            route, scope["mserve.headers"], await self.body(scope, receive), started
        )

    async def infer(
        self, route: InferRoute, headers: dict[bytes, bytes], body: bytes | None, started: float
    ) -> Reply:
        plane = self.plane
        served = plane.resolve(route.model, route.version, route.label)
        canary = plane.canary(route.model, route.version, route.label)
        if canary is not None:
            served = canary.pick(headers.get(canary.header) if canary.header else None)
        decode, encode = self.codec(route, headers, body)
        size = self.size(headers, body)
        if plane.runs_now(served, size):
            reply: Reply = plane.infer_now(
                served, route.protocol, started, decode, encode, route=canary
            )
            return reply
        apart = self.apart(route, headers, body)
        return await plane.infer(
            served, route.protocol, started, decode, encode, size=size, apart=apart, route=canary
        )

    def codec(
        self, route: InferRoute, headers: dict[bytes, bytes], body: bytes | None
    ) -> tuple[Any, Any]:
        """How this route's request is decoded and its answer encoded. The data plane calls
        both, so a failure in either is counted against the version."""
        if route.protocol == "v2":

            def decode_v2(served: ServedVersion) -> Any:
                length = _int_header(headers.get(v2.HEADER_LENGTH))
                return v2.decode_request(self.inflate(headers, body), length, served.plan)

            return decode_v2, _encode_v2
        verb = route.verb

        def decode_tf(served: ServedVersion) -> Any:
            return tfserving.decode_request(verb, self.inflate(headers, body), served.plan)

        return decode_tf, _encode_tf

    def apart(
        self, route: InferRoute, headers: dict[bytes, bytes], body: bytes | None
    ) -> Apart[Reply] | None:
        """What handles the request apart (``apart.py``), when its JSON is over
        ``APART_BYTES`` or came compressed (it may inflate to that). Else None, also for a
        body whose headers are wrong: decoding it here says what is wrong."""
        if body is None or (len(body) <= APART_BYTES and b"content-encoding" not in headers):
            return None  # the common case, first: small and not compressed
        encoding = headers.get(b"content-encoding", b"identity")
        if encoding not in (b"identity", b"gzip", b"deflate"):
            return None
        header_length = None
        if route.protocol == "v2" and v2.HEADER_LENGTH in headers:
            try:
                header_length = _int_header(headers[v2.HEADER_LENGTH])
            except InputError:
                return None
        if encoding == b"identity":
            json_bytes = len(body) if header_length is None else header_length
            if json_bytes <= APART_BYTES:
                return None
            compression = None
        else:
            compression = encoding.decode()
        reply = _v2_reply if route.protocol == "v2" else _tf_reply
        return Apart(
            self.processes,
            route.protocol,
            route.verb,
            body,
            header_length,
            compression,
            self.limit,
            reply,
        )

    # -- bodies -----------------------------------------------------------------------------

    async def body(self, scope: Scope, receive: Any) -> bytes:
        declared = _int_header(scope["mserve.headers"].get(b"content-length"))
        if declared is not None and declared > self.limit:
            raise PayloadTooLarge(f"the body is over the {self.limit}-byte limit")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"the body is over the {self.limit}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def size(self, headers: dict[bytes, bytes], body: bytes | None) -> int:
        """What decoding BODY may cost, in bytes: a compressed one counts as the largest it
        may inflate to (a small gzip body can hold a body at the limit)."""
        if body is None:
            return 0
        if headers.get(b"content-encoding", b"identity") != b"identity":
            return self.limit
        return len(body)

    def inflate(self, headers: dict[bytes, bytes], body: bytes | None) -> bytes:
        """The body as sent, decompressed; None is a body the fast path found over the limit."""
        if body is None:
            raise PayloadTooLarge(f"the body is over the {self.limit}-byte limit")
        encoding = headers.get(b"content-encoding")
        if encoding in (None, b"identity"):
            return body
        if encoding not in (b"gzip", b"deflate"):
            raise InputError(f"unsupported Content-Encoding {encoding.decode(errors='replace')}")
        return inflate(body, encoding.decode(), self.limit)


def _encode_v2(served: ServedVersion, request: Any, outputs: list[Any]) -> Reply:
    payload, header_length = v2.encode_response(
        served.model, served.version_text, served.plan, request, outputs
    )
    return _v2_reply(served, payload, header_length)


def _v2_reply(served: ServedVersion, payload: bytes, header_length: int | None) -> Reply:
    if header_length is None:
        return Reply(200, payload, model=served.model, version=served.version_text)
    return Reply(
        200,
        payload,
        b"application/octet-stream",
        ((v2.HEADER_LENGTH, str(header_length).encode()),),
        served.model,
        served.version_text,
    )


def _encode_tf(served: ServedVersion, request: Any, outputs: list[Any]) -> Reply:
    payload = tfserving.encode_reply(request, served.plan, outputs, served.runner.class_labels)
    return _tf_reply(served, payload, None)


def _tf_reply(served: ServedVersion, payload: bytes, _: int | None) -> Reply:
    return Reply(200, payload, model=served.model, version=served.version_text)


def _int_header(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError("a numeric header is not a number") from None
