"""KServe V2 gRPC (``inference.GRPCInferenceService``): each method converts the message, calls
the data plane (or a view, or the admin operations) and converts back, under one error edge.

The messages are the ones the ``tritonclient`` wheel generates from Triton's
grpc_service.proto, so tritonclient and the kserve client speak to it unchanged. The transport
under it is ``http2.py``, on the HTTP server's event loop: both share models, batchers,
metrics and statistics, and a cheap request answers within the socket callback, as on REST.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2

from mserve.errors import MserveError
from mserve.protocol import v2_grpc

from . import views
from .admin import Admin
from .dataplane import DataPlane, model_of, version_of

log = logging.getLogger("mserve.server")
SERVICE = "/inference.GRPCInferenceService/"
# gRPC status codes (grpc/status.h), by the HTTP status of mserve's errors
OK, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, PERMISSION_DENIED = 0, 3, 4, 5, 7
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL = 8, 9, 12, 13
UNAVAILABLE, UNAUTHENTICATED = 14, 16
STATUS_CODES = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    405: UNIMPLEMENTED,
    409: FAILED_PRECONDITION,
    413: RESOURCE_EXHAUSTED,
    422: FAILED_PRECONDITION,
    501: UNIMPLEMENTED,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}


class Outcome(NamedTuple):
    """A call's answer: a serialized response message, or a status code and its message."""

    code: int
    message: str = ""
    payload: bytes = b""


def failure(exc: BaseException, method: str, redact: Callable[[str], str] | None = None) -> Outcome:
    """The one error edge: mserve's errors become their codes with their message (without the
    repository's location, with REDACT); anything else is INTERNAL with a generic message,
    and one log line for the operator."""
    if isinstance(exc, MserveError):
        message = exc.message if redact is None else redact(exc.message)
        return Outcome(STATUS_CODES.get(exc.http_status, INTERNAL), message)
    if isinstance(exc, DecodeError):
        return Outcome(INVALID_ARGUMENT, f"the message is not a valid {method} request")
    log.error("internal error in gRPC %s", method, exc_info=exc)
    return Outcome(INTERNAL, "internal server error")


Handler = Callable[[Any, dict[str, str]], Any]


class InferenceService:
    def __init__(self, plane: DataPlane, admin: Admin, server_metadata: dict[str, Any]) -> None:
        self.plane = plane
        self.admin = admin
        self.server_metadata = server_metadata
        # path -> (request message class, handler)
        self.methods: dict[str, tuple[Any, Handler]] = {
            SERVICE + name: (getattr(service_pb2, f"{name}Request"), getattr(self, name))
            for name in (
                "ServerLive",
                "ServerReady",
                "ServerMetadata",
                "ModelReady",
                "ModelMetadata",
                "ModelConfig",
                "ModelStatistics",
                "ModelInfer",
                "RepositoryIndex",
                "RepositoryModelLoad",
                "RepositoryModelUnload",
            )
        }

    def call(
        self, path: str, message: bytes, metadata: dict[str, str]
    ) -> Outcome | Awaitable[Outcome]:
        """Answer one call: at once when it can, else with an awaitable. METADATA is the call's
        headers (pseudo-headers too: a handler reads only what it needs)."""
        entry = self.methods.get(path)
        if entry is None:
            return Outcome(UNIMPLEMENTED, f"method {path} is not served")
        kind, handler = entry
        try:
            result = handler(kind.FromString(message), metadata)
            if asyncio.iscoroutine(result):
                return self._later(result, path.rsplit("/", 1)[-1])
            return Outcome(OK, payload=result.SerializeToString())
        except Exception as exc:
            return failure(exc, path.rsplit("/", 1)[-1], self.plane.manager.redact)

    async def _later(self, result: Awaitable[Any], method: str) -> Outcome:
        try:
            return Outcome(OK, payload=(await result).SerializeToString())
        except Exception as exc:
            return failure(exc, method, self.plane.manager.redact)

    # -- methods ----------------------------------------------------------------------------

    def ServerLive(self, request: Any, metadata: dict[str, str]) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, metadata: dict[str, str]) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.plane.ready)

    def ServerMetadata(self, request: Any, metadata: dict[str, str]) -> Any:
        return json_format.ParseDict(self.server_metadata, service_pb2.ServerMetadataResponse())

    def ModelReady(self, request: Any, metadata: dict[str, str]) -> Any:
        ready = self.plane.model_ready(model_of(request.name), version_of(request.version))
        return service_pb2.ModelReadyResponse(ready=ready)

    def ModelMetadata(self, request: Any, metadata: dict[str, str]) -> Any:
        model, version = model_of(request.name), version_of(request.version)
        served = self.plane.resolve(model, version)
        versions = [version] if version is not None else self.plane.versions(model)
        return json_format.ParseDict(
            views.model_metadata(served, versions), service_pb2.ModelMetadataResponse()
        )

    def ModelConfig(self, request: Any, metadata: dict[str, str]) -> Any:
        served = self.plane.resolve(model_of(request.name), version_of(request.version))
        config = json_format.ParseDict(views.model_config(served), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    def ModelStatistics(self, request: Any, metadata: dict[str, str]) -> Any:
        model = model_of(request.name) if request.name else None
        stats = views.statistics(self.plane, model, version_of(request.version))
        return json_format.ParseDict(stats, service_pb2.ModelStatisticsResponse())

    def ModelInfer(self, request: Any, metadata: dict[str, str]) -> Any:
        started = time.perf_counter()
        model, version = model_of(request.model_name), version_of(request.model_version)
        served = self.plane.resolve(model, version)
        canary = self.plane.canary(model, version, None)
        if canary is not None:
            sticky = metadata.get(canary.canary.header) if canary.canary.header else None
            served = canary.pick(None if sticky is None else sticky.encode())

        def decode(served: Any) -> Any:
            return v2_grpc.decode_request(request, served.plan)

        def encode(served: Any, decoded: Any, outputs: list[Any]) -> Any:
            return v2_grpc.encode_response(
                served.model, served.version_text, served.plan, decoded, outputs
            )

        size = request.ByteSize()
        if self.plane.runs_now(served, size):
            return self.plane.infer_now(served, "grpc", started, decode, encode, route=canary)
        return self.plane.infer(served, "grpc", started, decode, encode, size=size, route=canary)

    # -- repository extension (behind the admin token, sent as "authorization" metadata) ----

    def _authorize(self, metadata: dict[str, str]) -> None:
        token = metadata.get("authorization")
        self.admin.authorize(token.encode("latin-1") if token is not None else None)

    def RepositoryIndex(self, request: Any, metadata: dict[str, str]) -> Any:
        self._authorize(metadata)
        return json_format.ParseDict(
            {"models": self.admin.index(request.ready)}, service_pb2.RepositoryIndexResponse()
        )

    async def RepositoryModelLoad(self, request: Any, metadata: dict[str, str]) -> Any:
        self._authorize(metadata)
        await self.admin.set_serving(request.model_name, True, dict(request.parameters))
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, metadata: dict[str, str]) -> Any:
        self._authorize(metadata)
        await self.admin.set_serving(request.model_name, False, dict(request.parameters))
        return service_pb2.RepositoryModelUnloadResponse()
