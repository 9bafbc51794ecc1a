"""Prometheus metrics, labelled by model and version (and protocol where it applies).

Counters and histograms are updated per request through cached label children; model states
and queue depths are read from the manager when Prometheus scrapes, so they cost nothing per
request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .models import ModelManager

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


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created doubles the output
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mserve_requests",
            "Inference requests by model, version, protocol and outcome.",
            ["model", "version", "protocol", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mserve_request_duration_seconds",
            "Inference request time, from body read to reply.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = Histogram(
            "mserve_queue_duration_seconds",
            "Time a batch's oldest request waited in the queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "mserve_inference_duration_seconds",
            "onnxruntime time per batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mserve_batch_size",
            "Rows per onnxruntime call.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def watch(self, manager: ModelManager) -> None:
        self.registry.register(_ManagerCollector(manager))

    def request(
        self, model: str, version: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        key = (model, version, protocol, outcome)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(model, version, protocol))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observer(self, model: str, version: str) -> BatchObserver:
        return BatchObserver(self, model, version)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchObserver:
    """Reports one version's batches (the executors' Observer)."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.queue = metrics.queue.labels(model, version)
        self.inference = metrics.inference.labels(model, version)
        self.size = metrics.batch_size.labels(model, version)

    def batch(self, size: int, queue_s: float, inference_s: float) -> None:
        self.size.observe(size)
        self.queue.observe(queue_s)
        self.inference.observe(inference_s)

    def inference_only(self, inference_s: float) -> None:
        self.inference.observe(inference_s)


class _ManagerCollector(Collector):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.manager.snapshot
        states = GaugeMetricFamily(
            "mserve_model_version_state",
            "1 for each version's current state (TF Serving states).",
            labels=["model", "version", "state"],
        )
        depth = GaugeMetricFamily(
            "mserve_queue_depth", "Requests waiting for a batch.", labels=["model", "version"]
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
                depth.add_metric(
                    [model, str(number)], float(len(getattr(served.executor, "pending", ())))
                )
                load.add_metric([model, str(number)], served.load_seconds)
        yield states
        yield depth
        yield load
