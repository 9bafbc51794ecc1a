"""What one benchmark step measures, how steps share the time with a baseline, and what a
whole run found (``Run``, which the CLI reports).

With a baseline, candidate and baseline run in alternating rounds, so a noisy moment of the
machine falls on both alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    import numpy as np

Array: TypeAlias = "np.ndarray[Any, Any]"  # numpy is imported only when a run starts

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
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


@dataclass
class Run:
    """A whole benchmark: who was measured, how, and the figures of every step."""

    mode: str  # "local" or "remote"
    model: str
    version: int
    inputs: str  # where the rows came from
    setup: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    baseline_results: list[Result] = field(default_factory=list)


class Progress(Protocol):
    """What a run tells whoever shows progress: a step starts (with its length in seconds or
    requests), advances, and ends. The CLI draws bars from it; the core draws nothing."""

    def start(self, description: str, seconds: float | None, iterations: int | None) -> Any: ...

    def update(self, task: Any, done: int | None, elapsed: float) -> None: ...

    def finish(self, task: Any) -> None: ...


class NoProgress:
    def start(self, description: str, seconds: float | None, iterations: int | None) -> Any:
        return None

    def update(self, task: Any, done: int | None, elapsed: float) -> None:
        pass

    def finish(self, task: Any) -> None:
        pass


Measure = Callable[[float | None, int | None], Measurement]  # (seconds, iterations) -> figures


def rounds(
    candidate: Measure,
    baseline: Measure | None,
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
