"""KServe V2 gRPC (``inference.GRPCInferenceService``), on the same data plane as REST.

The message classes and the servicer base come from the ``tritonclient`` wheel (generated from
Triton's grpc_service.proto), so the wire format is exactly the one tritonclient and the kserve
client speak. Tensors arrive in ``raw_input_contents`` (what tritonclient sends) or in typed
``contents``; outputs go back in ``raw_output_contents``. The server runs on the event loop of
the HTTP server (grpc.aio), so both share models, batchers, metrics and statistics.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from mserve.errors import InputError, MserveError, NotFoundError, NotReady
from mserve.signature import V2_BY_DTYPE

from . import v2
from .batching import rows_of

if TYPE_CHECKING:
    from .app import MserveApp

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
CONTENTS = {  # typed contents field for each V2 datatype
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _version(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise NotFoundError(f"invalid version '{text}'")
    return int(text)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, app: MserveApp) -> None:
        self.app = app

    async def _fail(self, context: Any, error: MserveError) -> None:
        await context.abort(
            STATUS_CODES.get(error.http_status, grpc.StatusCode.INTERNAL), error.message
        )

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.app.ready and not self.app.draining)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(
            name="mserve", version=self.app.version, extensions=self.app.extensions
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self.app.manager.resolve(request.name, _version(request.version))
        except NotReady:
            return service_pb2.ModelReadyResponse(ready=False)
        except MserveError as exc:
            await self._fail(context, exc)
        return service_pb2.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            served = self.app.manager.resolve(request.name, _version(request.version))
        except MserveError as exc:
            await self._fail(context, exc)
        versions = [served.version] if request.version else self.app.versions(request.name)
        return json_format.ParseDict(
            v2.metadata(served, versions), service_pb2.ModelMetadataResponse()
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            served = self.app.manager.resolve(request.name, _version(request.version))
        except MserveError as exc:
            await self._fail(context, exc)
        config = json_format.ParseDict(v2.config(served), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            stats = self.app.statistics(request.name or None, _version(request.version))
        except MserveError as exc:
            await self._fail(context, exc)
        return json_format.ParseDict(stats, service_pb2.ModelStatisticsResponse())

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        served = None
        try:
            served = self.app.manager.resolve(request.model_name, _version(request.model_version))
            feeds = v2.Feeds(served.input_plan)
            raw = list(request.raw_input_contents)
            for index, tensor in enumerate(request.inputs):
                data = None
                if not raw:
                    field = CONTENTS.get(tensor.datatype)
                    data = list(getattr(tensor.contents, field)) if field else None
                feeds.add(
                    tensor.name,
                    tensor.datatype,
                    list(tensor.shape),
                    raw[index] if raw else None,
                    data,
                )
            arrays = feeds.complete()
            outputs = await served.executor.run(arrays)
            reply = self._reply(served, request, outputs)
            self.app.count(served, "grpc", None, started, rows_of(arrays))
            return reply
        except MserveError as exc:
            if served is not None:
                self.app.count(served, "grpc", exc, started)
            await self._fail(context, exc)
            raise  # abort() raises; this only tells the type checker

    # -- repository extension (behind the admin token, sent as "authorization" metadata) ----

    async def _authorize(self, context: Any) -> None:
        metadata = dict(context.invocation_metadata() or ())
        token = metadata.get("authorization")
        try:
            self.app.admin.authorize(token.encode() if isinstance(token, str) else None)
        except MserveError as exc:
            await self._fail(context, exc)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        await self._authorize(context)
        return json_format.ParseDict(
            {"models": self.app.admin.index(request.ready)}, service_pb2.RepositoryIndexResponse()
        )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self._set_serving(request, context, serving=True)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self._set_serving(request, context, serving=False)
        return service_pb2.RepositoryModelUnloadResponse()

    async def _set_serving(self, request: Any, context: Any, *, serving: bool) -> None:
        await self._authorize(context)
        try:
            await self.app.admin.set_serving(request.model_name, serving, dict(request.parameters))
        except MserveError as exc:
            await self._fail(context, exc)

    def _reply(self, served: Any, request: Any, outputs: list[Any]) -> Any:
        by_name = dict(zip(served.runner.output_names, outputs, strict=True))
        wanted = [o.name for o in request.outputs] or list(by_name)
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise InputError(f"unknown output {unknown[0]!r}")
        specs = {spec.name: spec for spec in served.signature.outputs}
        reply = service_pb2.ModelInferResponse(
            model_name=served.model, model_version=str(served.version), id=request.id
        )
        for name in wanted:
            array = np.asarray(by_name[name])
            reply.outputs.add(
                name=name,
                datatype=V2_BY_DTYPE.get(specs[name].dtype, "BYTES"),
                shape=list(array.shape),
            )
            reply.raw_output_contents.append(v2.raw_bytes(array))
        return reply


async def start(app: MserveApp, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(app), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise MserveError(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    return server
