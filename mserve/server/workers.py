"""``mserve serve --workers N``: N processes serving one HTTP port and one gRPC port.

The supervisor binds both ports once and starts N workers (``python -m mserve.server.worker``).
Each worker inherits the listening sockets (the kernel hands each new connection to one of the
processes accepting on them), reads its settings from stdin (never argv or the environment:
they hold the admin token), and also listens on a Unix socket of its own in a private folder.
Over those sockets a worker that answers ``/metrics`` adds its siblings' figures to its own, so
a scrape sees the whole server, not one fragment; and a worker that made an admin change has
its siblings apply it before it answers. On SIGTERM the supervisor passes the signal on, each
worker drains as a lone server does, and the supervisor exits once every worker has; a worker
that dies otherwise is started again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .settings import BatchSettings, ServerSettings, VersionPolicy

log = logging.getLogger("mserve.server")
RESTART_PAUSE_S = (1.0, 30.0)  # a worker that dies is started again after this, doubling
STEADY_S = 60.0  # ... back to the first pause for a worker that had run this long
SIBLING_TIMEOUT_S = 5.0
# Gauges that add up over workers (the rest are states: the highest, or the lowest, is shown).
ADDED = frozenset(
    {
        "mserve_requests_in_flight",
        "mserve_queue_depth",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
    }
)
LOWEST = frozenset({"mserve_repository_up", "process_start_time_seconds"})


# -- in a worker --------------------------------------------------------------------------------


class Siblings:
    """The other workers of this server, reached over their Unix sockets."""

    def __init__(self, index: int, folder: Path, count: int) -> None:
        self.index = index
        self.folder = folder
        self.others = [socket_path(folder, i) for i in range(count) if i != index]

    @property
    def own_socket(self) -> Path:
        return socket_path(self.folder, self.index)

    async def metrics(self, own: bytes) -> bytes:
        """OWN metrics with every sibling's added (a sibling that does not answer is left
        out, and said so in the log)."""
        import httpx

        async def read(path: Path) -> str | None:
            transport = httpx.AsyncHTTPTransport(uds=str(path))
            async with httpx.AsyncClient(transport=transport, timeout=SIBLING_TIMEOUT_S) as client:
                try:
                    reply = await client.get("http://localhost/metrics")
                except httpx.HTTPError as exc:  # it may be starting (again)
                    log.debug("worker %s did not answer for /metrics: %s", path.stem, exc)
                    return None
                return reply.text

        texts = await asyncio.gather(*(read(path) for path in self.others))
        return merge([own.decode(), *(text for text in texts if text is not None)])

    def refresh(self, model: str) -> None:
        """Have every sibling bring MODEL in line with the repository now (after an admin
        change here), rather than at its next poll."""
        import httpx

        for path in self.others:
            transport = httpx.HTTPTransport(uds=str(path))
            with httpx.Client(transport=transport, timeout=SIBLING_TIMEOUT_S * 6) as client:
                try:
                    client.post(f"http://localhost/_worker/refresh/{model}").raise_for_status()
                except httpx.HTTPError as exc:  # it follows at its next poll
                    log.warning("worker %s did not refresh %s: %s", path.stem, model, exc)


def socket_path(folder: Path, index: int) -> Path:
    return folder / f"worker-{index}.sock"


def merge(texts: list[str]) -> bytes:
    """Several workers' metrics as one: counters, histograms and additive gauges summed by
    their labels; other gauges (states, timestamps) the highest, ``up`` the lowest."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            kept = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            samples = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = samples.get(key)
                if seen is None:
                    samples[key] = sample.value
                elif kept.type != "gauge" or family.name in ADDED:
                    samples[key] = seen + sample.value
                elif family.name in LOWEST:
                    samples[key] = min(seen, sample.value)
                else:
                    samples[key] = max(seen, sample.value)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


# -- the supervisor ---------------------------------------------------------------------------


def supervise(
    settings: ServerSettings, count: int, http: socket.socket, grpc: socket.socket | None
) -> None:
    """Run COUNT workers on the bound HTTP (and gRPC) sockets until SIGTERM or SIGINT."""
    for bound in (http, grpc):
        if bound is not None:
            bound.listen(2048)
    folder = Path(tempfile.mkdtemp(prefix="mserve-workers-"))  # 0700: only this user
    stopping = False
    workers: list[subprocess.Popen[bytes]] = []
    started: list[float] = []

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def start(index: int) -> subprocess.Popen[bytes]:
        fds = [http.fileno(), *([grpc.fileno()] if grpc is not None else [])]
        worker_settings = settings
        if settings.source is not None:  # each its own cache: a copy is never shared mid-write
            worker_settings = replace(settings, repository=settings.repository / f"worker-{index}")
        process = subprocess.Popen(
            [sys.executable, "-m", "mserve.server.worker", str(index), str(count), str(folder)]
            + [str(fd) for fd in fds],
            stdin=subprocess.PIPE,
            pass_fds=fds,
        )
        assert process.stdin is not None
        process.stdin.write(encode(worker_settings))
        process.stdin.close()
        return process

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving with %d workers on http://%s:%d", count, settings.host, settings.port)
    for index in range(count):
        workers.append(start(index))
        started.append(time.monotonic())
    pauses = [RESTART_PAUSE_S[0]] * count
    code = 0
    try:
        while any(worker.poll() is None for worker in workers) or not stopping:
            time.sleep(0.2)
            for index, worker in enumerate(workers):
                exited = worker.poll()
                if exited is None or stopping:
                    continue
                if time.monotonic() - started[index] > STEADY_S:  # not one that keeps dying
                    pauses[index] = RESTART_PAUSE_S[0]
                log.error(
                    "worker %d exited (%d); starting it again in %g s", index, exited, pauses[index]
                )
                time.sleep(pauses[index])
                pauses[index] = min(pauses[index] * 2, RESTART_PAUSE_S[1])
                if not stopping:
                    workers[index] = start(index)
                    started[index] = time.monotonic()
        code = max(abs(worker.returncode or 0) for worker in workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if code:
        raise SystemExit(code)


def encode(settings: ServerSettings) -> bytes:
    data = asdict(settings)
    data["repository"] = str(settings.repository)
    data["allowed_hosts"] = list(settings.allowed_hosts)
    return json.dumps(data).encode()


def decode(data: bytes) -> ServerSettings:
    fields = json.loads(data)
    fields["repository"] = Path(fields["repository"])
    fields["version_policy"] = VersionPolicy(**fields["version_policy"])
    fields["defaults"] = BatchSettings(**fields["defaults"])
    fields["allowed_hosts"] = tuple(fields["allowed_hosts"])
    return ServerSettings(**fields)
