"""The composition root: builds the data plane, the admin operations and both transports, and
runs them under uvicorn (httptools with the fast path, uvloop) with a graceful SIGTERM.

On SIGTERM or SIGINT readiness turns 503 at once (so a load balancer stops sending), uvicorn
stops accepting connections, requests in flight finish, and the process exits 0 once they have
or when the grace period ends.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

from .admin import Admin
from .dataplane import DataPlane
from .rest.app import RestApp
from .rest.fastpath import protocol_for
from .settings import ServerSettings

log = logging.getLogger("mserve.server")


@dataclass
class Server:
    """Every part of one server, wired together."""

    settings: ServerSettings
    plane: DataPlane
    admin: Admin
    rest: RestApp
    grpc: Any = None  # the running grpc.aio server, once started

    async def start(self) -> None:
        """Read the repository and load what it serves, then open gRPC (if configured)."""
        await asyncio.get_running_loop().run_in_executor(None, self.plane.manager.start)
        settings = self.settings
        if settings.grpc_port:
            from . import grpc

            service = grpc.InferenceService(
                self.plane, self.admin, self.rest.routes.server_metadata
            )
            self.grpc = await grpc.start(
                service, settings.host, settings.grpc_port, settings.max_body_bytes
            )
        self.plane.started = True

    async def stop(self) -> None:
        self.plane.started = False
        if self.grpc is not None:
            await self.grpc.stop(self.settings.shutdown_grace_s)
        await asyncio.get_running_loop().run_in_executor(None, self.plane.manager.stop)


def build(settings: ServerSettings) -> Server:
    plane = DataPlane(settings)
    admin = Admin(
        settings.admin_token, plane.manager, f"admin API on {settings.host}:{settings.port}"
    )
    rest = RestApp(settings, plane, admin, package_version("mserve"))
    server = Server(settings, plane, admin, rest)
    rest.on_startup, rest.on_shutdown = server.start, server.stop
    return server


def serve(settings: ServerSettings) -> None:
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = build(settings)
    config = uvicorn.Config(
        server.rest,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_for(server.rest),  # httptools, with a direct path for inference
        lifespan="on",
        access_log=False,  # the app writes its own structured access log
        proxy_headers=False,  # a middleware per request, for X-Forwarded-* mserve does not use
        log_level="warning",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
    )

    class Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            server.plane.draining = True
            super().handle_exit(sig, frame)

    log.info("serving %s on http://%s:%d", settings.repository, settings.host, settings.port)
    # uvicorn re-raises the signal it caught to the previous handler once it has drained; the
    # drain is the whole answer to SIGTERM here, so the process then exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    Uvicorn(config).run()
