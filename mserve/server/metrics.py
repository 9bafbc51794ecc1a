"""Prometheus metrics, labelled by model and version (and protocol where it applies).

Every update happens on the event loop's thread (executors report there, not from their
threads), so
the per-request path is plain counting into lists, with no locks; the Prometheus families are
built only when /metrics is scraped. Model states and queue depths are read from the manager
at that moment too.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .canary import Route
    from .manager import ModelManager
    from .served import ServedVersion

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, result = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += count
            result.append((bound, float(cumulative)))
        return result


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests: dict[
            tuple[str, str, str, str], int
        ] = {}  # model, version, protocol, outcome
        self.latency: dict[tuple[str, str, str], _Histogram] = {}  # model, version, protocol
        self.batches: dict[tuple[str, str], BatchObserver] = {}
        # (model, canary id) -> what the canary's routed requests and shadow copies showed
        self.canaries: dict[tuple[str, str], CanaryFigures] = {}
        self.canaries_lock = threading.Lock()  # shadow copies report from their own thread
        self.registry.register(_Collector(self))
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...:
        # what an autoscaler (or an operator) reads besides the queues
        ProcessCollector(registry=self.registry)

    def watch(self, manager: ModelManager) -> None:
        self.registry.register(_ManagerCollector(manager, self))

    def request(
        self, model: str, version: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        key = (model, version, protocol, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(key[:3])
        if histogram is None:
            histogram = self.latency[key[:3]] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def routed(self, route: Route, served: ServedVersion, outcome: str, seconds: float) -> None:
        """One request to a canary's label, answered by SERVED."""
        figures = self._figures(route)
        key = (served.version_text, route.role(served), outcome)
        figures.requests[key] = figures.requests.get(key, 0) + 1
        histogram = figures.latency.get(key[:2])
        if histogram is None:
            histogram = figures.latency[key[:2]] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def shadowed(
        self, route: Route, outcome: str, seconds: float | None, largest: float | None
    ) -> None:
        """One shadow copy's outcome (canary.py): from the shadow thread, or dropped."""
        with self.canaries_lock:
            figures = self._figures(route)
            figures.shadow[outcome] = figures.shadow.get(outcome, 0) + 1
            if seconds is not None:
                figures.shadow_latency.observe(seconds)
            if largest is not None and largest > figures.largest:
                figures.largest = largest

    def _figures(self, route: Route) -> CanaryFigures:
        key = (route.candidate.model, route.id)
        figures = self.canaries.get(key)
        if figures is None:
            with self.canaries_lock:
                figures = self.canaries.setdefault(key, CanaryFigures(route))
        return figures

    def observer(self, model: str, version: str) -> BatchObserver:
        return self.batches.setdefault((model, version), BatchObserver())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchObserver:
    """One version's batches (the executors' Observer)."""

    def __init__(self) -> None:
        self.queue = _Histogram(LATENCY_BUCKETS)
        self.inference = _Histogram(LATENCY_BUCKETS)
        self.size = _Histogram(BATCH_BUCKETS)

    def batch(self, size: int, queue_s: float, inference_s: float) -> None:
        self.size.observe(size)
        self.queue.observe(queue_s)
        self.inference.observe(inference_s)

    def inference_only(self, inference_s: float) -> None:
        self.inference.observe(inference_s)


class CanaryFigures:
    """One canary's requests and shadow copies in this process."""

    def __init__(self, route: Route) -> None:
        self.candidate = route.candidate.version_text
        self.requests: dict[tuple[str, str, str], int] = {}  # version, role, outcome
        self.latency: dict[tuple[str, str], _Histogram] = {}  # version, role
        self.shadow: dict[str, int] = {}  # outcome
        self.shadow_latency = _Histogram(LATENCY_BUCKETS)
        self.largest = 0.0  # the largest absolute difference a shadow copy showed


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "mserve_requests",
            "Inference requests by model, version, protocol and outcome.",
            labels=["model", "version", "protocol", "outcome"],
        )
        for request_labels, count in list(self.metrics.requests.items()):
            requests.add_metric(list(request_labels), count)
        yield requests
        latency = HistogramMetricFamily(
            "mserve_request_duration_seconds",
            "Inference request time, from body read to reply.",
            labels=["model", "version", "protocol"],
        )
        for latency_labels, histogram in list(self.metrics.latency.items()):
            latency.add_metric(list(latency_labels), histogram.buckets(), histogram.total)
        yield latency
        families = {
            "queue": HistogramMetricFamily(
                "mserve_queue_duration_seconds",
                "Time a batch's oldest request waited.",
                labels=["model", "version"],
            ),
            "inference": HistogramMetricFamily(
                "mserve_inference_duration_seconds",
                "onnxruntime time per batch.",
                labels=["model", "version"],
            ),
            "size": HistogramMetricFamily(
                "mserve_batch_size", "Rows per onnxruntime call.", labels=["model", "version"]
            ),
        }
        for version_labels, observer in list(self.metrics.batches.items()):
            for name, family in families.items():
                batches: _Histogram = getattr(observer, name)
                family.add_metric(list(version_labels), batches.buckets(), batches.total)
        yield from families.values()


class _ManagerCollector(Collector):
    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshot = self.manager.snapshot
        states = GaugeMetricFamily(
            "mserve_model_version_state",
            "1 for each version's current state (TF Serving states).",
            labels=["model", "version", "state"],
        )
        in_flight = GaugeMetricFamily(
            "mserve_requests_in_flight",
            "Requests admitted off the event loop and not yet answered (waiting or running); "
            "a request answered within the loop's turn is never in flight when scraped.",
            labels=["model", "version"],
        )
        depth = GaugeMetricFamily(
            "mserve_queue_depth",
            "Requests waiting for their version's threads or next batch.",
            labels=["model", "version"],
        )
        load = GaugeMetricFamily(
            "mserve_model_load_seconds",
            "How long loading a version took.",
            labels=["model", "version"],
        )
        for model, statuses in snapshot.status.items():
            for number, status in statuses.items():
                states.add_metric([model, str(number), status.state], 1.0)
        for model, versions in snapshot.served.items():
            for number, served in versions.items():
                in_flight.add_metric([model, str(number)], float(served.executor.in_flight))
                depth.add_metric([model, str(number)], float(served.executor.waiting))
                load.add_metric([model, str(number)], served.load_seconds)
        loads = CounterMetricFamily(
            "mserve_model_loads",
            "Load events by outcome: each load, and each new reason a version fails to load.",
            labels=["model", "version", "outcome"],
        )
        for event, count in list(self.manager.load_events.items()):
            loads.add_metric(list(event), count)
        applied = GaugeMetricFamily(
            "mserve_model_state_applied",
            "1 for the repository state (model.json's fingerprint) each model was last brought "
            "in line with: replicas that show one state have converged.",
            labels=["model", "state"],
        )
        for model, fingerprint in snapshot.applied.items():
            applied.add_metric([model, fingerprint], 1.0)
        yield from _canary_families(self.metrics, snapshot.routes)
        yield states
        yield in_flight
        yield depth
        yield load
        yield loads
        yield applied
        mirror = self.manager.mirror
        if mirror is not None:  # serving from an object store
            up = GaugeMetricFamily(
                "mserve_repository_up",
                "1 when the last poll reached the object store, 0 while it cannot be reached.",
            )
            up.add_metric([], 0.0 if mirror.error else 1.0)
            synced = GaugeMetricFamily(
                "mserve_repository_last_sync_timestamp_seconds",
                "When a poll last reached the object store (Unix time; 0: never).",
            )
            synced.add_metric([], mirror.last_sync)
            yield up
            yield synced


def _canary_families(metrics: Metrics, routes: dict[str, Route]) -> Iterator[Metric]:
    """The canaries this server applies, and their figures; those of ended canaries are
    forgotten."""
    info = GaugeMetricFamily(
        "mserve_canary_info",
        "1 for each canary this server applies (model.json's canary).",
        labels=["model", "canary", "label", "baseline", "candidate", "weight", "header", "shadow"],
    )
    for model, route in routes.items():
        canary = route.canary
        info.add_metric(
            [
                model,
                canary.id,
                canary.label,
                str(canary.baseline),
                str(canary.candidate),
                f"{canary.weight:g}",
                canary.header or "",
                "true" if canary.shadow else "false",
            ],
            1.0,
        )
    yield info
    requests = CounterMetricFamily(
        "mserve_canary_requests",
        "Requests to a canary's label by the version that answered, its role and the outcome.",
        labels=["model", "canary", "version", "role", "outcome"],
    )
    latency = HistogramMetricFamily(
        "mserve_canary_request_duration_seconds",
        "Time to answer requests to a canary's label, by the version that answered.",
        labels=["model", "canary", "version", "role"],
    )
    shadow = CounterMetricFamily(
        "mserve_shadow_comparisons",
        "Shadow copies run by a canary's candidate, by outcome: agree, labels_differ, "
        "values_differ, error, dropped.",
        labels=["model", "canary", "version", "outcome"],
    )
    shadow_latency = HistogramMetricFamily(
        "mserve_shadow_duration_seconds",
        "onnxruntime time of a shadow copy on the candidate.",
        labels=["model", "canary", "version"],
    )
    largest = GaugeMetricFamily(
        "mserve_shadow_max_abs_difference",
        "The largest absolute difference between the candidate's and the baseline's "
        "floating-point outputs over the canary's shadow copies.",
        labels=["model", "canary", "version"],
    )
    active = {(model, route.id) for model, route in routes.items()}
    with metrics.canaries_lock:
        for key in [key for key in metrics.canaries if key not in active]:
            del metrics.canaries[key]
        figures = list(metrics.canaries.items())
    for (model, canary_id), these in figures:
        for (version, role, outcome), count in list(these.requests.items()):
            requests.add_metric([model, canary_id, version, role, outcome], count)
        for (version, role), histogram in list(these.latency.items()):
            latency.add_metric(
                [model, canary_id, version, role], histogram.buckets(), histogram.total
            )
        if these.shadow:
            candidate = [model, canary_id, these.candidate]
            for outcome, count in list(these.shadow.items()):
                shadow.add_metric([*candidate, outcome], count)
            histogram = these.shadow_latency
            shadow_latency.add_metric(candidate, histogram.buckets(), histogram.total)
            largest.add_metric(candidate, these.largest)
    yield from (requests, latency, shadow, shadow_latency, largest)
