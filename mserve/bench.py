"""Latency and throughput figures, and the gates CI jobs put on them.

A local run times ``session.run`` in a tight loop on one onnxruntime session: nothing but two
clock reads sits between the timestamps, so its figures are a bare timing loop's. A remote run
drives a server from worker processes (``mserve.loadgen``). Either way each step of a sweep (a
batch size, a concurrency) gives one ``Result``. With a baseline, candidate and baseline run in
alternating rounds, so a noisy moment of the machine falls on both alike.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EnvironmentProblem, InputError, UsageError, foreign_message
from .signature import TensorSpec, numpy_dtype

if TYPE_CHECKING:
    import numpy as np

    Array = np.ndarray[Any, Any]

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
ROUNDS_WITH_BASELINE = 4
TICK_NS = 100_000_000  # progress updates, ten a second


@dataclass
class Measurement:
    """What one timed stretch saw: latencies of the successful requests, every outcome."""

    latencies_ns: list[int]
    seconds: float
    outcomes: Counter[str] = field(default_factory=Counter)  # "ok" or an error's status


@dataclass
class Result:
    batch_size: int
    concurrency: int
    requests: int
    errors: int
    errors_by_status: dict[str, int]
    seconds: float
    throughput_rps: float  # successful requests per second
    rows_per_s: float
    latency_ms: dict[str, float]

    @classmethod
    def of(cls, batch_size: int, concurrency: int, parts: list[Measurement]) -> Result:
        import numpy as np

        latencies = np.array([ns for p in parts for ns in p.latencies_ns], dtype=np.float64) / 1e6
        outcomes: Counter[str] = Counter()
        for part in parts:
            outcomes.update(part.outcomes)
        seconds = sum(p.seconds for p in parts)
        ok = outcomes.pop("ok", 0)
        throughput = ok / seconds if seconds > 0 else 0.0
        if latencies.size:
            figures = {k: float(np.percentile(latencies, q)) for k, q in PERCENTILES.items()}
            figures["max"] = float(latencies.max())
        else:
            figures = dict.fromkeys([*PERCENTILES, "max"], float("nan"))
        return cls(
            batch_size=batch_size,
            concurrency=concurrency,
            requests=ok + sum(outcomes.values()),
            errors=sum(outcomes.values()),
            errors_by_status=dict(sorted(outcomes.items())),
            seconds=round(seconds, 6),
            throughput_rps=round(throughput, 2),
            rows_per_s=round(throughput * batch_size, 2),
            latency_ms={k: round(v, 4) for k, v in figures.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_status": self.errors_by_status,
            "seconds": self.seconds,
            "throughput_rps": self.throughput_rps,
            "rows_per_s": self.rows_per_s,
            "latency_ms": self.latency_ms,
        }

    @property
    def step(self) -> str:
        return f"batch {self.batch_size}, concurrency {self.concurrency}"


# -- inputs ----------------------------------------------------------------------------------


def parse_shapes(texts: list[str]) -> dict[str, tuple[int, ...]]:
    """``--shape name=1,3,224,224`` options as {name: shape}."""
    shapes = {}
    for text in texts:
        name, _, dims = text.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) < 1:
            raise UsageError(f"--shape {text!r}: use NAME=D1,D2,... with positive sizes")
        shapes[name] = shape
    return shapes


def make_inputs(
    specs: list[TensorSpec],
    batch_size: int,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data: Mapping[str, Array] | None = None,
) -> dict[str, Array]:
    """One request's inputs with ``batch_size`` rows: rows of ``data`` repeated as needed, else
    random values of each input's dtype and shape (``shapes`` fills variable dimensions)."""
    import numpy as np

    shapes = shapes or {}
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise UsageError(f"--shape names {unknown[0]!r}, which is not an input of the model")
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in specs:
        if not spec.is_tensor or spec.shape is None:
            raise UsageError(f"input {spec.name!r} is not a tensor of known rank; mserve bench")
        batchable = bool(spec.shape) and not isinstance(spec.shape[0], int)
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch_size:
            raise UsageError(
                f"input {spec.name!r} has a fixed first dimension of {spec.shape[0]}: "
                f"batch size {batch_size} cannot be fed"
            )
        if data is not None and spec.name in data:
            rows = np.asarray(data[spec.name])
            if not batchable or rows.ndim == 0 or not len(rows):
                arrays[spec.name] = rows
                continue
            arrays[spec.name] = np.take(rows, np.arange(batch_size) % len(rows), axis=0)
            continue
        shape = _shape(spec, batch_size, shapes.get(spec.name))
        arrays[spec.name] = _random(rng, spec.dtype, shape)
    return arrays


def _shape(spec: TensorSpec, batch_size: int, given: tuple[int, ...] | None) -> tuple[int, ...]:
    assert spec.shape is not None
    if given is not None:
        if len(given) != len(spec.shape):
            raise UsageError(
                f"--shape {spec.name}: the input has rank {len(spec.shape)}, not {len(given)}"
            )
        dims = list(given)
        for axis, want in enumerate(spec.shape):
            if isinstance(want, int) and want != dims[axis]:
                raise UsageError(f"--shape {spec.name}: dimension {axis} must be {want}")
    else:
        dims = []
        for axis, want in enumerate(spec.shape):
            if isinstance(want, int):
                dims.append(want)
            elif axis == 0:
                dims.append(batch_size)
            else:
                raise UsageError(
                    f"input {spec.name!r} {spec.shape_text()} has a variable dimension {axis}: "
                    f"give its size with --shape {spec.name}=D1,D2,..."
                )
    if spec.shape and not isinstance(spec.shape[0], int):
        dims[0] = batch_size  # the batch axis follows --batch-size
    return tuple(dims)


def _random(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> Array:
    import numpy as np

    target = numpy_dtype(dtype)
    if dtype == "string":
        return np.full(shape, "a", dtype=object)
    if target.kind == "f":
        return rng.standard_normal(shape).astype(target)
    if target.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 10, shape).astype(target)  # small: indices stay in range


# -- local -----------------------------------------------------------------------------------


def provider(name: str) -> list[str]:
    """onnxruntime providers for ``--provider`` (the CPU one last, as onnxruntime's fallback)."""
    import onnxruntime as ort

    full = PROVIDERS.get(name.lower(), name)
    available = ort.get_available_providers()
    if full not in available:
        names = ", ".join(k for k, v in PROVIDERS.items() if v in available)
        raise EnvironmentProblem(
            f"provider {name!r} is not in this onnxruntime build (available: {names})"
        )
    return list(dict.fromkeys([full, "CPUExecutionProvider"]))


class LocalModel:
    """One onnxruntime session and its timing loop."""

    def __init__(self, path: Path, *, threads: int = 0, providers: list[str] | None = None) -> None:
        from .runtime import create_session

        started = time.perf_counter()
        self.session = create_session(path, threads=threads, providers=providers)
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


def rounds(
    candidate: Callable[[float | None, int | None], Measurement],
    baseline: Callable[[float | None, int | None], Measurement] | None,
    *,
    seconds: float | None,
    iterations: int | None,
) -> tuple[list[Measurement], list[Measurement]]:
    """Measure the candidate, and the baseline if any, in alternating rounds sharing the time
    (or the iterations): each gets the same slices of whatever the machine is doing."""
    count = ROUNDS_WITH_BASELINE if baseline is not None else 1
    share_s = seconds / count if seconds else None
    share_n = -(-iterations // count) if iterations else None
    ours: list[Measurement] = []
    theirs: list[Measurement] = []
    for _ in range(count):
        ours.append(candidate(share_s, share_n))
        if baseline is not None:
            theirs.append(baseline(share_s, share_n))
    return ours, theirs


# -- gates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gates:
    max_regression_pct: float | None = None
    max_p99_ms: float | None = None
    min_throughput: float | None = None


@dataclass(frozen=True)
class GateCheck:
    """One gate on one step. ``value`` is what the limit applies to (a percent change for the
    regression gates, whose raw figures are ``candidate`` and ``baseline``)."""

    gate: str
    step: str
    passed: bool
    value: float
    limit: float
    candidate: float | None = None
    baseline: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "step": self.step,
            "passed": self.passed,
            "value": self.value,
            "limit": self.limit,
            "candidate": self.candidate,
            "baseline": self.baseline,
        }

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        if self.gate == "errors":
            return f"{verdict} {self.step}: {self.value:.0f} failed requests (allowed: none)"
        if self.candidate is not None and self.baseline is not None:
            figure = "p50" if self.gate.startswith("p50") else "throughput"
            return (
                f"{verdict} {self.step}: {self.gate} {self.value:+.1f}% (limit {self.limit:g}%): "
                f"{figure} {_figure(figure, self.candidate)}, "
                f"baseline {_figure(figure, self.baseline)}"
            )
        bound = "at most" if self.gate == "p99" else "at least"
        return (
            f"{verdict} {self.step}: {self.gate} {_figure(self.gate, self.value)} "
            f"({bound} {_figure(self.gate, self.limit)})"
        )


def _figure(kind: str, value: float) -> str:
    return f"{value:,.1f} req/s" if kind == "throughput" else f"{value:.4g} ms"


def judge(results: list[Result], baseline: list[Result] | None, gates: Gates) -> list[GateCheck]:
    """Every gate on every step; a run with failed requests never passes."""
    checks = []
    for index, result in enumerate(results):
        step = result.step
        checks.append(GateCheck("errors", step, result.errors == 0, result.errors, 0))
        if gates.max_p99_ms is not None:
            p99 = result.latency_ms["p99"]
            checks.append(GateCheck("p99", step, p99 <= gates.max_p99_ms, p99, gates.max_p99_ms))
        if gates.min_throughput is not None:
            rps = result.throughput_rps
            checks.append(
                GateCheck(
                    "throughput", step, rps >= gates.min_throughput, rps, gates.min_throughput
                )
            )
        if gates.max_regression_pct is not None and baseline is not None:
            base, limit = baseline[index], gates.max_regression_pct
            slower = _change(result.latency_ms["p50"], base.latency_ms["p50"])
            fewer = -_change(result.throughput_rps, base.throughput_rps)
            checks += [
                GateCheck(
                    "p50 regression",
                    step,
                    slower <= limit,
                    round(slower, 2),
                    limit,
                    result.latency_ms["p50"],
                    base.latency_ms["p50"],
                ),
                GateCheck(
                    "throughput regression",
                    step,
                    fewer <= limit,
                    round(fewer, 2),
                    limit,
                    result.throughput_rps,
                    base.throughput_rps,
                ),
            ]
    return checks


def _change(value: float, base: float) -> float:
    """Percent change of ``value`` over ``base``."""
    return (value - base) / base * 100 if base else 0.0
