"""KServe V2 gRPC (``inference.GRPCInferenceService``): each method converts the message, calls
the data plane (or a view, or the admin operations) and converts back, under one error edge.

The servicer base comes from the ``tritonclient`` wheel. The server runs on the HTTP server's
event loop (grpc.aio), so both transports share models, batchers, metrics and statistics.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from mserve.errors import MserveError
from mserve.protocol import v2_grpc

from . import views
from .admin import Admin
from .dataplane import DataPlane, model_of, version_of

log = logging.getLogger("mserve.server")
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])


def edge(method: Method) -> Method:
    """The one error edge: mserve's errors become their status codes with their message;
    anything else is INTERNAL with a generic message, and one log line for the operator."""

    @functools.wraps(method)
    async def guarded(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except MserveError as exc:
            code = STATUS_CODES.get(exc.http_status, grpc.StatusCode.INTERNAL)
            await context.abort(code, exc.message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.error("internal error in gRPC %s", method.__name__, exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")

    return guarded  # type: ignore[return-value]


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane, admin: Admin, server_metadata: dict[str, Any]) -> None:
        self.plane = plane
        self.admin = admin
        self.server_metadata = server_metadata

    @edge
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    @edge
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.plane.ready)

    @edge
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self.server_metadata, service_pb2.ServerMetadataResponse())

    @edge
    async def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.plane.model_ready(model_of(request.name), version_of(request.version))
        return service_pb2.ModelReadyResponse(ready=ready)

    @edge
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        model, version = model_of(request.name), version_of(request.version)
        served = self.plane.resolve(model, version)
        versions = [version] if version is not None else self.plane.versions(model)
        return json_format.ParseDict(
            views.model_metadata(served, versions), service_pb2.ModelMetadataResponse()
        )

    @edge
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        served = self.plane.resolve(model_of(request.name), version_of(request.version))
        config = json_format.ParseDict(views.model_config(served), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    @edge
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        model = model_of(request.name) if request.name else None
        stats = views.statistics(self.plane, model, version_of(request.version))
        return json_format.ParseDict(stats, service_pb2.ModelStatisticsResponse())

    @edge
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        served = self.plane.resolve(model_of(request.model_name), version_of(request.model_version))
        return await self.plane.infer(
            served,
            "grpc",
            started,
            lambda s: v2_grpc.decode_request(request, s.plan),
            lambda s, decoded, outputs: v2_grpc.encode_response(
                s.model, s.version_text, s.plan, decoded, outputs
            ),
        )

    # -- repository extension (behind the admin token, sent as "authorization" metadata) ----

    def _authorize(self, context: Any) -> None:
        token = dict(context.invocation_metadata() or ()).get("authorization")
        self.admin.authorize(token.encode() if isinstance(token, str) else None)

    @edge
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        return json_format.ParseDict(
            {"models": self.admin.index(request.ready)}, service_pb2.RepositoryIndexResponse()
        )

    @edge
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        await self.admin.set_serving(request.model_name, True, dict(request.parameters))
        return service_pb2.RepositoryModelLoadResponse()

    @edge
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        await self.admin.set_serving(request.model_name, False, dict(request.parameters))
        return service_pb2.RepositoryModelUnloadResponse()


async def start(
    service: InferenceService, host: str, port: int, max_message_bytes: int
) -> grpc.aio.Server:
    """The gRPC server on HOST:PORT. Messages may be as large as an HTTP body (--max-body-mb);
    the port is never shared with another process (grpcio sets SO_REUSEPORT by default)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise MserveError(f"cannot bind gRPC to {host}:{port} (is the port in use?)")
    await server.start()
    return server
