"""The composition root: builds the data plane, the admin operations and both transports, and
runs them under uvicorn (httptools with the fast path, uvloop) with a graceful SIGTERM.

On SIGTERM or SIGINT readiness turns 503 at once (so a load balancer stops sending); after
``--drain-pause`` (everything is still served meanwhile, for the balancer to see readiness drop)
uvicorn stops accepting connections and closes idle ones, requests in flight finish, and the
process exits 0 once they have or when the grace period ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time
from dataclasses import dataclass, replace
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any

from mserve.cpus import usable_cpus
from mserve.errors import EnvironmentProblem, UsageError

from . import logs
from .admin import Admin
from .connections import Connections, default_cap
from .dataplane import DataPlane
from .rest.app import RestApp
from .rest.fastpath import protocol_for
from .settings import ServerSettings

if TYPE_CHECKING:
    from .workers import Siblings

log = logging.getLogger("mserve.server")


@dataclass
class Server:
    """Every part of one server, wired together."""

    settings: ServerSettings
    plane: DataPlane
    admin: Admin
    rest: RestApp
    guard: Connections
    grpc: Any = None  # the gRPC listener (an asyncio server), once started
    grpc_connections: Any = ()
    grpc_socket: socket.socket | None = None  # bound before any model loads
    loading: asyncio.Future[None] | None = None  # the first read of the repository

    async def start(self) -> None:
        """Open gRPC (if configured) and load the models in the background: liveness answers
        while they load, readiness once the first read of the repository is done (each model's
        own readiness once its versions are loaded)."""
        if self.settings.grpc_port:
            await self._start_grpc()
        if not self.plane.started:  # a worker loads before it takes connections
            self.loading = asyncio.get_running_loop().run_in_executor(None, self._load_models)

    def _load_models(self) -> None:
        self.plane.manager.start()  # never raises: a fault stays with its version or model
        self.plane.started = True

    async def _start_grpc(self) -> None:
        from . import grpc, http2

        settings = self.settings
        service = grpc.InferenceService(self.plane, self.admin, self.rest.routes.server_metadata)
        protocol = http2.protocol_for(service, settings.max_body_bytes, self.guard)
        self.grpc_connections = protocol.connections
        sock = self.grpc_socket or bind(settings.host, settings.grpc_port, "gRPC port")
        self.grpc = await asyncio.get_running_loop().create_server(protocol, sock=sock)

    def drain(self) -> None:
        """SIGTERM: readiness turns false, gRPC takes no new connection and tells each client
        to go away (HTTP is uvicorn's to drain); calls in flight go on."""
        self.plane.draining = True
        if self.grpc is not None:
            self.grpc.close()
            for connection in list(self.grpc_connections):
                connection.go_away()

    async def stop(self) -> None:
        self.plane.started = False
        self.plane.draining = True  # stays not ready even if the first load ends after this
        if self.grpc is not None:
            self.drain()  # calls in flight finish within the grace
            deadline = time.monotonic() + self.settings.shutdown_grace_s
            while self.grpc_connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for connection in list(self.grpc_connections):
                connection.transport.close()
        await asyncio.get_running_loop().run_in_executor(None, self.plane.manager.stop)
        self.rest.routes.processes.close()
        self.plane.shadows.stop()


def build(settings: ServerSettings, siblings: Siblings | None = None) -> Server:
    """Every part of a server; SIBLINGS are the other workers when it is one of several."""
    plane = DataPlane(settings)
    admin = Admin(
        settings.admin_token, plane.manager, f"admin API on {settings.host}:{settings.port}"
    )
    rest = RestApp(settings, plane, admin, package_version("mserve"))
    if siblings is not None:
        admin.after_change = siblings.refresh
        rest.routes.siblings = siblings
    guard = Connections(settings.max_connections or default_cap(), settings.read_timeout_s)
    server = Server(settings, plane, admin, rest, guard)
    rest.on_startup, rest.on_shutdown = server.start, server.stop
    return server


def bind(host: str, port: int, what: str) -> socket.socket:
    """A socket bound to HOST:PORT (not yet listening), or a one-line error. Both ports are
    bound before any model loads, so a taken one stops the start at once, and they stay bound
    (no probe-then-bind race). SO_REUSEADDR, as servers set it: a port in TIME_WAIT is free;
    never SO_REUSEPORT: two servers never share a port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise EnvironmentProblem(f"{what} {port} on {host} is in use") from None
        raise EnvironmentProblem(
            f"cannot listen on {what} {port} on {host}: {exc.strerror}"
        ) from None
    return sock


def fit_threads(settings: ServerSettings, workers: int) -> ServerSettings:
    """onnxruntime's threads per model, unless set. Its own default (0) when nothing limits the
    process more than its cores: measured faster than any explicit count here (it pins its
    threads), benchmarks/RESULTS.md. A cgroup quota below the cores (a pod's CPU limit), or
    workers sharing them, get an explicit count: the cores usable, shared among the workers."""
    if settings.defaults.threads:
        return settings
    cores, how = usable_cpus()
    if workers == 1 and not how.startswith("a cgroup quota"):
        log.info("onnxruntime threads per model: its default (%d cores usable: %s)", cores, how)
        return settings
    threads = max(1, cores // workers)
    log.info("onnxruntime threads per model: %d (%d cores usable: %s)", threads, cores, how)
    return replace(settings, defaults=replace(settings.defaults, threads=threads))


def serve(
    settings: ServerSettings,
    *,
    workers: int = 1,
    http: socket.socket | None = None,
    grpc: socket.socket | None = None,
    siblings: Siblings | None = None,
) -> None:
    """Serve until SIGTERM: this process, or with WORKERS > 1 as many processes on the same
    ports (workers.py). A worker is given its sockets (HTTP, GRPC) and its SIBLINGS."""
    import uvicorn

    logs.configure(json=settings.json_logs)
    # Both ports bound first: one in use stops the start at once, before anything is said.
    http_socket = http or bind(settings.host, settings.port, "port")
    grpc_port = settings.grpc_port
    grpc_socket = grpc or (bind(settings.host, grpc_port, "gRPC port") if grpc_port else None)
    settings = fit_threads(settings, workers)
    if workers > 1:
        from .workers import supervise

        supervise(settings, workers, http_socket, grpc_socket)
        return
    server = build(settings, siblings)
    sockets = [http_socket]
    server.grpc_socket = grpc_socket
    if siblings is not None:
        # Where the other workers reach this one, listening from now: a change they tell it of
        # while it loads waits there, and is applied once it has loaded.
        private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        siblings.own_socket.unlink(missing_ok=True)  # left by a worker that was killed
        private.bind(str(siblings.own_socket))
        private.listen(64)
        sockets.append(private)
        # A worker takes connections on the shared port only once its models are loaded: one
        # still loading would answer requests the ready ones' readiness invited with 503.
        server._load_models()
    config = uvicorn.Config(
        server.rest,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_for(server.rest, server.guard),  # httptools, with a direct path for inference
        lifespan="on",
        access_log=False,  # the app writes its own structured access log
        proxy_headers=False,  # a middleware per request, for X-Forwarded-* mserve does not use
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]  # a float works
        server_header=False,
    )

    class Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            pause = settings.drain_pause_s
            if pause > 0 and not server.plane.draining:
                # Readiness off first, and everything served on (keep-alive connections too)
                # until a load balancer has seen it; a second signal closes at once.
                server.plane.draining = True
                log.info("draining: not ready; serving %g s more, then closing", pause)
                loop = asyncio.get_running_loop()
                loop.call_later(pause, self.close_after_pause, sig, frame)
                return
            self.close(sig, frame)

        def close_after_pause(self, sig: int, frame: Any) -> None:
            if not self.should_exit:  # else a second signal closed it already
                self.close(sig, frame)

        def close(self, sig: int, frame: Any) -> None:
            server.drain()
            super().handle_exit(sig, frame)

    served = settings.source or settings.repository  # a store's URL, not the cache's folder
    if siblings is None:
        log.info("serving %s on http://%s:%d", served, settings.host, settings.port)
    # uvicorn re-raises the signal it caught to the previous handler once it has drained; the
    # drain is the whole answer to SIGTERM here, so the process then exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    Uvicorn(config).run(sockets=sockets)
