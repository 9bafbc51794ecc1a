"""Local runs: one onnxruntime session per version, timed in a tight loop (nothing but two
clock reads sits between the timestamps, so the figures are a bare timing loop's), over a sweep
of batch sizes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError, foreign_message
from ..manifest import SAMPLE_INPUTS
from ..reference import Reference
from ..repository import Repository
from ..signature import TensorSpec
from ..verified import VerifiedModel, open_model
from .feeds import InputSource, make_inputs, rows
from .measure import TICK_NS, Array, Measure, Measurement, NoProgress, Progress, Result, Run, rounds

ROUNDS_WITH_BASELINE = 4


def provider(name: str) -> list[str]:
    """onnxruntime providers for ``--provider`` (the CPU one last, as onnxruntime's fallback);
    one this onnxruntime does not offer is an error here, not a fallback: a figure must say
    what it measured."""
    from ..providers import choose

    return list(dict.fromkeys([*choose([name]), "CPUExecutionProvider"]))


class LocalModel:
    """One onnxruntime session and its timing loop."""

    def __init__(
        self, model: VerifiedModel, *, threads: int = 0, providers: list[str] | None = None
    ) -> None:
        from ..runtime import create_session

        started = time.perf_counter()
        self.session = create_session(model, threads=threads, providers=providers)
        self.session_seconds = time.perf_counter() - started
        self.first_inference_seconds: float | None = None

    def measure(
        self,
        feeds: dict[str, Array],
        *,
        seconds: float | None = None,
        iterations: int | None = None,
        warmup: int = 0,
        tick: Callable[[int, float], None] | None = None,
    ) -> Measurement:
        """Run until ``seconds`` pass or ``iterations`` are done; ``tick(done, elapsed)`` is told
        how far it got about ten times a second."""
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        run, clock = self.session.run, time.perf_counter_ns
        try:
            if self.first_inference_seconds is None:
                started = clock()
                run(None, feeds)
                self.first_inference_seconds = (clock() - started) / 1e9
            for _ in range(warmup):
                run(None, feeds)
            latencies: list[int] = []
            append = latencies.append
            start = clock()
            # Two loops, each no more than a bare timing loop: a clock read either side of run().
            if iterations:
                for _ in range(iterations):
                    before = clock()
                    run(None, feeds)
                    append(clock() - before)
            else:
                deadline = start + int((seconds or 0) * 1e9)
                next_tick = start + TICK_NS if tick is not None else 2**63
                while True:
                    before = clock()
                    run(None, feeds)
                    after = clock()
                    append(after - before)
                    if after >= deadline:
                        break
                    if after >= next_tick and tick is not None:
                        next_tick = after + TICK_NS
                        tick(len(latencies), (after - start) / 1e9)
        except (state.InvalidArgument, state.RuntimeException, state.Fail) as exc:
            raise InputError(
                f"the model rejected the benchmark inputs: {foreign_message(exc)}"
            ) from None
        elapsed = (clock() - start) / 1e9
        return Measurement(latencies, elapsed, Counter(ok=len(latencies)))


@dataclass
class _Version:
    """One version under test: its session, its inputs, and where their rows came from."""

    model: str
    number: int
    runner: LocalModel
    specs: list[TensorSpec]
    data: dict[str, Array] | None
    source: str

    def measure(
        self,
        size: int,
        progress: Progress,
        *,
        shapes: dict[str, tuple[int, ...]],
        warmup: int,
    ) -> Measure:
        feeds = make_inputs(self.specs, size, shapes=shapes, data=self.data)
        label = f"{self.model}:{self.number} batch {size}"

        def run(share_s: float | None, share_n: int | None) -> Measurement:
            task = progress.start(label, share_s, share_n)
            result = self.runner.measure(
                feeds,
                seconds=share_s,
                iterations=share_n,
                warmup=warmup,
                tick=lambda done, elapsed: progress.update(task, done, elapsed),
            )
            progress.finish(task)
            return result

        return run


def run_local(
    repository: Repository,
    ref: Reference,
    baseline: Reference | None,
    *,
    batch_sizes: list[int],
    seconds: float | None,
    iterations: int | None,
    warmup: int,
    threads: int,
    provider_name: str,
    shapes: dict[str, tuple[int, ...]],
    source: InputSource,
    progress: Progress | None = None,
) -> Run:
    """Benchmark ``ref`` (and ``baseline``, in alternating rounds) at every batch size."""
    progress = progress or NoProgress()
    providers = provider(provider_name)

    def open_version(reference: Reference) -> _Version:
        model, number = repository.resolve(reference)
        specs = list(repository.manifest(model, number).signature.inputs)
        stored = repository.stored_arrays(model, number, SAMPLE_INPUTS)
        data, origin = rows(specs, source, stored)
        verified = open_model(repository, model, number)[1]
        runner = LocalModel(verified, threads=threads, providers=providers)
        return _Version(model, number, runner, specs, data, origin)

    ours = open_version(ref)
    theirs = open_version(baseline) if baseline is not None else None
    run = Run("local", ours.model, ours.number, ours.source, {"provider": providers[0]})
    if theirs is not None:
        run.baseline = {"model": theirs.model, "version": theirs.number}
    for size in batch_sizes:
        candidate = ours.measure(size, progress, shapes=shapes, warmup=warmup)
        against = (
            theirs.measure(size, progress, shapes=shapes, warmup=warmup)
            if theirs is not None
            else None
        )
        mine, other = rounds(candidate, against, seconds=seconds, iterations=iterations)
        run.results.append(Result.of(size, 1, mine))
        if other:
            run.baseline_results.append(Result.of(size, 1, other))
    run.setup |= {
        "session_ms": round(ours.runner.session_seconds * 1000, 3),
        "first_inference_ms": round((ours.runner.first_inference_seconds or 0) * 1000, 3),
    }
    return run
