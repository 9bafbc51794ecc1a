"""Prometheus metrics, labelled by model and version (and protocol where it applies).

Every update happens on the event loop's thread (executors report there, not from their
threads), so
the per-request path is plain counting into lists, with no locks; the Prometheus families are
built only when /metrics is scraped. Model states and queue depths are read from the manager
at that moment too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .manager import ModelManager

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
        self.registry.register(_Collector(self))
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...:
        # what an autoscaler (or an operator) reads besides the queues
        ProcessCollector(registry=self.registry)

    def watch(self, manager: ModelManager) -> None:
        self.registry.register(_ManagerCollector(manager))

    def request(
        self, model: str, version: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        key = (model, version, protocol, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(key[:3])
        if histogram is None:
            histogram = self.latency[key[:3]] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

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
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snapshot = self.manager.snapshot
        states = GaugeMetricFamily(
            "mserve_model_version_state",
            "1 for each version's current state (TF Serving states).",
            labels=["model", "version", "state"],
        )
        depth = GaugeMetricFamily(
            "mserve_queue_depth",
            "Requests admitted off the event loop and not yet answered (waiting or running).",
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
                depth.add_metric([model, str(number)], float(served.executor.in_flight))
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
        yield states
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
