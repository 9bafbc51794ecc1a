"""Remote runs: a running server driven by load-generator processes (``mserve.loadgen``) over
a sweep of batch sizes and concurrencies, after a measure of the generator's own ceiling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import loadgen
from ..client import ServerClient
from ..errors import UsageError
from ..reference import Reference
from ..signature import TensorSpec
from .feeds import InputSource, make_inputs, rows
from .measure import Array, Measure, Measurement, NoProgress, Progress, Result, Run, rounds


@dataclass
class _Version:
    """One version on the server, pinned by number (a label may move mid-run)."""

    model: str
    number: int
    specs: list[TensorSpec]
    data: dict[str, Array] | None
    source: str


@dataclass(frozen=True)
class _Targets:
    url: str
    protocol: str
    grpc_port: int
    shapes: dict[str, tuple[int, ...]]

    def find(self, client: ServerClient, reference: Reference, source: InputSource) -> _Version:
        specs = client.signature(reference.model, client.resolve(reference))
        data, origin = rows(specs, source, None)
        # One real request pins the version: a label or the default may move mid-run.
        number, _ = client.infer(reference, make_inputs(specs, 1, shapes=self.shapes, data=data))
        return _Version(reference.model, number, specs, data, origin)

    def target(self, version: _Version, size: int) -> loadgen.Target:
        return loadgen.infer_target(
            self.url,
            self.protocol,
            model=version.model,
            version=version.number,
            inputs=make_inputs(version.specs, size, shapes=self.shapes, data=version.data),
            dtypes={s.name: s.dtype for s in version.specs},
            grpc_port=self.grpc_port,
        )


def run_remote(
    url: str,
    ref: Reference,
    baseline: Reference | None,
    *,
    batch_sizes: list[int],
    concurrencies: list[int],
    seconds: float,
    warmup: int,
    protocol: str,
    grpc_port: int,
    workers: int | None,
    shapes: dict[str, tuple[int, ...]],
    source: InputSource,
    progress: Progress | None = None,
) -> Run:
    """Benchmark ``ref`` on the server at ``url`` (and ``baseline``, in alternating rounds)."""
    if protocol not in loadgen.PROTOCOLS:
        raise UsageError(f"--protocol {protocol!r}: use one of {', '.join(loadgen.PROTOCOLS)}")
    shown = progress or NoProgress()
    targets = _Targets(url, protocol, grpc_port, shapes)
    client = ServerClient(url)
    try:
        ours = targets.find(client, ref, source)
        theirs = targets.find(client, baseline, source) if baseline is not None else None
    finally:
        client.close()
    run = Run("remote", ours.model, ours.number, ours.source, {"server": url, "protocol": protocol})
    if theirs is not None:
        run.baseline = {"model": theirs.model, "version": theirs.number}

    with loadgen.LoadGenerator() as generator:

        def measure(target: loadgen.Target, c: int, label: str) -> Measure:
            def go(share_s: float | None, _: int | None) -> Measurement:
                return _in_background(
                    lambda: generator.run(
                        target,
                        concurrency=c,
                        seconds=share_s or seconds,
                        warmup=warmup,
                        workers=workers or loadgen.default_workers(c),
                    ),
                    shown,
                    shown.start(label, share_s, None),
                )

            return go

        top = max(concurrencies)
        ceiling = measure(
            loadgen.ceiling_target(targets.target(ours, 1)),
            top,
            f"load generator ceiling, {top} connections",
        )(min(2.0, seconds), None)
        run.setup |= {
            "workers": workers or loadgen.default_workers(top),
            "generator_ceiling_rps": Result.of(1, top, [ceiling]).throughput_rps,
        }
        for size in batch_sizes:
            mine = targets.target(ours, size)
            other = targets.target(theirs, size) if theirs is not None else None
            for c in concurrencies:
                step = f"batch {size}, concurrency {c}"
                candidate = measure(mine, c, f"{ours.model}:{ours.number} {step}")
                against = measure(other, c, f"baseline {step}") if other is not None else None
                measured, compared = rounds(candidate, against, seconds=seconds, iterations=None)
                run.results.append(Result.of(size, c, measured))
                if compared:
                    run.baseline_results.append(Result.of(size, c, compared))
    return run


def _in_background(work: Callable[[], Measurement], progress: Progress, task: Any) -> Measurement:
    """Run ``work`` on a thread while the progress display follows the clock."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        progress.update(task, None, time.monotonic() - started)
    progress.finish(task)
    if "error" in outcome:
        raise outcome["error"]
    result: Measurement = outcome["value"]
    return result
