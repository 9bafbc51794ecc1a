"""Latency and throughput of a version, and the gates CI jobs put on them.

    measure.py   Measurement, Result (one step's figures), Run (a whole benchmark), rounds with
                 a baseline, the Progress a caller may show
    feeds.py     the rows to feed: an input file, stored samples, or random values
    local.py     run_local: onnxruntime in this process, a sweep of batch sizes
    remote.py    run_remote: a running server driven by mserve.loadgen, a concurrency sweep
    gates.py     Gates, GateCheck and judge: failed requests, p99, throughput, regression

A local run times ``session.run`` in a tight loop; a remote run drives a server from worker
processes. Either way each step of a sweep gives one ``Result``. ``local`` and ``remote`` are
imported by name (``mserve.bench.remote`` imports the load generator, which imports this).
"""

from __future__ import annotations

from .feeds import make_inputs, parse_shapes
from .gates import GateCheck, Gates, judge
from .measure import Array, Measurement, NoProgress, Progress, Result, Run, rounds

__all__ = [
    "Array",
    "GateCheck",
    "Gates",
    "Measurement",
    "NoProgress",
    "Progress",
    "Result",
    "Run",
    "judge",
    "make_inputs",
    "parse_shapes",
    "rounds",
]
