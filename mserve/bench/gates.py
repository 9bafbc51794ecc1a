"""The gates CI jobs put on benchmark figures: failed requests, p99, throughput, and regression
against a baseline measured in the same run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .measure import Result


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
