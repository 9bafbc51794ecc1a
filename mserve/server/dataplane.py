"""The data plane: what every transport calls to find a version, run an inference and account
for it. REST (both paths) and gRPC differ only in how they decode and encode; resolution, the
default-version rule, admission, execution (inline, on a thread or batched) and the metrics
and statistics are here, once, so both give the same answer to the same request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mserve.errors import MserveError, NotFoundError, NotReady
from mserve.protocol.tensors import InferRequest
from mserve.reference import check_model_name, parse_version

from .apart import Apart
from .batching import INLINE_BYTES, Run, Unbatched, make_executor, rows_of
from .canary import Route, Shadows
from .manager import ModelManager
from .metrics import Metrics
from .served import ServedVersion
from .settings import ServerSettings

Reply = TypeVar("Reply")
Decode = Callable[[ServedVersion], InferRequest]
Encode = Callable[[ServedVersion, Any, list[Any]], Reply]


@dataclass
class Stats:
    """Triton's statistics extension for one version (counts and nanoseconds)."""

    success: int = 0
    success_ns: int = 0
    fail: int = 0
    fail_ns: int = 0
    rows: int = 0
    last_ms: int = 0


class DataPlane:
    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.manager = ModelManager(settings, self._executor)
        # resolve(model, version | None, label | None) -> ServedVersion: the manager's own
        # (on every request, so without a layer between)
        self.resolve = self.manager.resolve
        self.metrics.watch(self.manager)
        self.started = False  # the repository was read once at start-up
        self.draining = False  # SIGTERM: finishing what is in flight
        self.stats: dict[tuple[str, int], Stats] = {}
        self.shadows = Shadows(self.metrics)

    def _executor(self, model: str, version: int, runner: Any, settings: Any) -> Any:
        return make_executor(runner, settings, self.metrics.observer(model, str(version)))

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    # -- resolution -------------------------------------------------------------------------

    def model_ready(self, model: str, version: int | None = None) -> bool:
        """Whether requests for MODEL (at VERSION) are answered now; never an error."""
        try:
            self.manager.resolve(model, version)
        except (NotReady, NotFoundError):
            return False
        return True

    def canary(self, model: str, version: int | None, label: str | None) -> Route | None:
        """The canary a request for MODEL naming VERSION or LABEL (or neither) goes through:
        the transport then asks its ``pick`` which version answers."""
        routes = self.manager.snapshot.routes
        if not routes or version is not None:
            return None
        route = routes.get(model)
        return route if route is not None and route.applies(label) else None

    def versions(self, model: str) -> list[int]:
        return sorted(self.manager.snapshot.served.get(model, {}))

    # -- inference --------------------------------------------------------------------------

    def runs_now(self, served: ServedVersion, size: int) -> bool:
        """Whether a request of SIZE bytes for SERVED is answered within the caller's turn
        (``infer_now``); else it goes through ``infer``."""
        unbatched = served.unbatched
        return unbatched is not None and unbatched.cheap and size <= INLINE_BYTES

    def infer_now(
        self,
        served: ServedVersion,
        protocol: str,
        started: float,
        decode: Decode,
        encode: Encode[Reply],
        *,
        route: Route | None = None,
    ) -> Reply:
        """A cheap inference (``runs_now``), answered within the caller's turn; ROUTE is the
        canary that chose SERVED."""
        unbatched = served.unbatched
        assert unbatched is not None  # callers ask runs_now first
        try:
            request = decode(served)
            outputs = unbatched.run_now(request.feeds)
            reply = encode(served, request, outputs)
        except Exception as exc:
            self.count(served, protocol, exc, started, route=route)
            raise
        # the time since the request arrived: what this call held the loop for
        rows = rows_of(request.feeds)
        unbatched.measured(self.count(served, protocol, None, started, rows=rows, route=route))
        if route is not None:
            self.shadow(route, served, request, outputs)
        return reply

    async def infer(
        self,
        served: ServedVersion,
        protocol: str,
        started: float,
        decode: Decode,
        encode: Encode[Reply],
        *,
        size: int,
        apart: Apart[Reply] | None = None,
        route: Route | None = None,
    ) -> Reply:
        """An inference off the event loop (or batched): admitted before its body is decoded,
        answered by its timeout. A large body (SIZE bytes) is decoded and its answer encoded on
        a thread; large JSON in a codec process (APART: parsing it holds the GIL)."""
        executor = served.executor
        try:
            executor.admit()
        except Exception as exc:
            self.count(served, protocol, exc, started, route=route)
            raise
        try:
            if apart is not None:
                deadline = started + executor.settings.timeout_s
                request = await apart.decode(served, deadline)
                if isinstance(executor, Unbatched):
                    outputs = await executor.call(lambda run: run(request.feeds), started)
                else:
                    outputs = await executor.run(request.feeds, started)
                reply = await apart.encode(served, request, outputs, deadline)
            elif isinstance(executor, Unbatched):

                def job(run: Run) -> tuple[InferRequest, list[Any], Reply]:
                    request = decode(served)
                    outputs = run(request.feeds)
                    return request, outputs, encode(served, request, outputs)

                request, outputs, reply = await executor.call(job, started)
            elif size <= INLINE_BYTES:
                request = decode(served)
                outputs = await executor.run(request.feeds, started)
                reply = encode(served, request, outputs)
            else:
                request = await asyncio.to_thread(decode, served)
                outputs = await executor.run(request.feeds, started)
                reply = await asyncio.to_thread(encode, served, request, outputs)
        except Exception as exc:
            self.count(served, protocol, exc, started, route=route)
            raise
        finally:
            executor.release()
        self.count(served, protocol, None, started, rows=rows_of(request.feeds), route=route)
        if route is not None:
            self.shadow(route, served, request, outputs)
        return reply

    def shadow(
        self, route: Route, served: ServedVersion, request: InferRequest, outputs: list[Any]
    ) -> None:
        """A copy of a request the baseline answered, for the candidate to run (canary.py)."""
        if route.canary.shadow and served is route.baseline:
            self.shadows.copy(route, request.feeds, outputs)

    def count(
        self,
        served: ServedVersion,
        protocol: str,
        error: Exception | None,
        started: float,
        *,
        rows: int = 0,
        route: Route | None = None,
    ) -> float:
        """Count one answer in the metrics and statistics (and the canary's, when ROUTE chose
        SERVED); the seconds since STARTED."""
        seconds = time.perf_counter() - started
        if error is None:
            outcome = "ok"
        elif isinstance(error, MserveError):
            outcome = str(error.http_status)
            error.model_version = served.version_text  # named in the reply (a canary's split)
        else:
            outcome = "500"
        self.metrics.request(served.model, served.version_text, protocol, outcome, seconds)
        if route is not None:
            self.metrics.routed(route, served, outcome, seconds)
        key = (served.model, served.version)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = Stats()
        nanoseconds = int(seconds * 1e9)
        if error is None:
            stats.success += 1
            stats.success_ns += nanoseconds
            stats.rows += rows
        else:
            stats.fail += 1
            stats.fail_ns += nanoseconds
        stats.last_ms = int(time.time() * 1000)
        return seconds


def version_of(text: str) -> int | None:
    """A version as every transport writes it: "" for none, else a positive integer without
    leading zeros; anything else is the request's fault (400 / INVALID_ARGUMENT)."""
    return None if text == "" else parse_version(text)


def model_of(text: str) -> str:
    """A model name from a request: one that cannot be a model's is simply not found."""
    try:
        return check_model_name(text)
    except MserveError:
        raise NotFoundError(f"model {text[:64]!r} not found") from None  # !r: one line
