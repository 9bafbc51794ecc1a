"""A canary's figures, summed over every replica's ``/metrics``, and the verdict on them.

Each replica counts the requests its canary routed (by the version that answered) and the
shadow copies its candidate ran, under the canary's id; counts and histogram buckets add up
across replicas, so the figures are the fleet's whatever the replica count. Quantiles are read
from the summed buckets the way Prometheus's ``histogram_quantile`` reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

COMPARED = ("agree", "labels_differ", "values_differ", "error")  # not "dropped": never run


@dataclass
class Latency:
    """Summed cumulative histogram buckets: upper bound -> requests at or under it."""

    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, bound: float, count: float) -> None:
        self.buckets[bound] = self.buckets.get(bound, 0.0) + count

    def quantile(self, q: float) -> float | None:
        """Linear within the bucket the rank falls in; None without observations."""
        bounds = sorted(self.buckets)
        if not bounds or self.buckets[bounds[-1]] == 0:
            return None
        rank = q * self.buckets[bounds[-1]]
        lower, below = 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):  # past the last finite bound: that bound is all we know
                    return lower
                share = (rank - below) / (count - below) if count > below else 1.0
                return lower + (bound - lower) * share
            lower, below = bound, count
        return lower


@dataclass
class Side:
    """The baseline's or the candidate's requests to the canary's label."""

    version: int
    requests: int = 0
    errors: int = 0
    latency: Latency = field(default_factory=Latency)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_s": self.latency.quantile(0.5),
            "p99_s": self.latency.quantile(0.99),
        }


@dataclass
class Figures:
    """One canary, as every reachable replica counted it."""

    model: str
    canary: str  # its id
    baseline: Side
    candidate: Side
    shadow: dict[str, int] = field(default_factory=dict)  # outcome -> copies
    shadow_latency: Latency = field(default_factory=Latency)
    largest_difference: float = 0.0
    applied_by: list[str] = field(default_factory=list)  # replicas that apply the canary
    unreachable: dict[str, str] = field(default_factory=dict)  # replica -> why

    @property
    def compared(self) -> int:
        return sum(self.shadow.get(outcome, 0) for outcome in COMPARED)

    @property
    def agreement(self) -> float | None:
        return self.shadow.get("agree", 0) / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "canary": self.canary,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "shadow": {
                "compared": self.compared,
                "agreement": self.agreement,
                "outcomes": self.shadow,
                "largest_abs_difference": self.largest_difference,
                "p50_s": self.shadow_latency.quantile(0.5),
                "p99_s": self.shadow_latency.quantile(0.99),
            },
            "applied_by": self.applied_by,
            "unreachable": self.unreachable,
        }


@dataclass(frozen=True)
class Gates:
    """How much worse than the baseline a candidate may be before it is aborted."""

    max_error_increase: float = 0.01  # error rate, as a fraction: 0.01 is one point more
    max_latency_ratio: float = 1.5  # candidate p99 over baseline p99
    min_agreement: float = 0.99  # shadow copies that agree
    min_requests: int = 100  # before any judgement: routed requests, or shadow copies


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass", "fail", or "wait" (too few requests yet)
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reasons": list(self.reasons)}


def judge(figures: Figures, gates: Gates) -> Verdict:
    """Fail when the candidate is worse than the baseline by more than the gates allow."""
    baseline, candidate = figures.baseline, figures.candidate
    failures: list[str] = []
    judged = False
    if candidate.requests >= gates.min_requests:
        judged = True
        if candidate.error_rate > baseline.error_rate + gates.max_error_increase:
            failures.append(
                f"error rate {candidate.error_rate:.2%} against the baseline's "
                f"{baseline.error_rate:.2%} (more than {gates.max_error_increase:.2%} worse)"
            )
        ours, theirs = baseline.latency.quantile(0.99), candidate.latency.quantile(0.99)
        enough = baseline.requests >= gates.min_requests
        if enough and ours and theirs and theirs > ours * gates.max_latency_ratio:
            failures.append(
                f"p99 {theirs * 1000:.2f} ms against the baseline's {ours * 1000:.2f} ms "
                f"(more than {gates.max_latency_ratio:g}x)"
            )
    agreement = figures.agreement
    if figures.compared >= gates.min_requests and agreement is not None:
        judged = True
        if agreement < gates.min_agreement:
            failures.append(
                f"shadow agreement {agreement:.2%} under {gates.min_agreement:.2%} "
                f"(largest difference {figures.largest_difference:.3g})"
            )
    if failures:
        return Verdict("fail", tuple(failures))
    if not judged:
        seen = max(candidate.requests, figures.compared)
        return Verdict("wait", (f"{seen} of {gates.min_requests} requests needed so far",))
    return Verdict("pass", ())


def canaries_in(text: str) -> dict[str, dict[str, str]]:
    """The canaries one replica's metrics say it applies: model -> mserve_canary_info's
    labels."""
    found: dict[str, dict[str, str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mserve_canary_info":
            for sample in family.samples:
                found[sample.labels["model"]] = dict(sample.labels)
    return found


def add_replica(figures: Figures, replica: str, text: str) -> None:
    """Add one replica's metrics (TEXT) to FIGURES."""
    model, canary = figures.model, figures.canary
    sides = {"baseline": figures.baseline, "candidate": figures.candidate}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or labels.get("canary") != canary:
                continue
            name = sample.name
            if name == "mserve_canary_info":
                figures.applied_by.append(replica)
            elif name == "mserve_canary_requests_total":
                side = sides[labels["role"]]
                side.requests += int(sample.value)
                if labels["outcome"] != "ok":
                    side.errors += int(sample.value)
            elif name == "mserve_canary_request_duration_seconds_bucket":
                sides[labels["role"]].latency.add(float(labels["le"]), sample.value)
            elif name == "mserve_shadow_comparisons_total":
                outcome = labels["outcome"]
                figures.shadow[outcome] = figures.shadow.get(outcome, 0) + int(sample.value)
            elif name == "mserve_shadow_duration_seconds_bucket":
                figures.shadow_latency.add(float(labels["le"]), sample.value)
            elif name == "mserve_shadow_max_abs_difference":
                figures.largest_difference = max(figures.largest_difference, sample.value)
