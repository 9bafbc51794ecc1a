"""A canary in the server: which version answers a request to the canary's label, and the
shadow copies of requests that the candidate runs off the request path.

Every replica reads the same canary from ``model.json`` and applies the same split: a request
with the sticky header lands by a hash of its value (the same version on every replica), one
without it at random, so the split holds at any replica count without a mesh.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mserve.canary import Canary

if TYPE_CHECKING:
    from .served import ServedVersion

log = logging.getLogger("mserve.server")
SHADOW_QUEUE = 64  # copies waiting for the candidate; past it they are dropped (and counted)


@dataclass(frozen=True, eq=False)
class Route:
    """A canary this server applies: both its versions are loaded."""

    canary: Canary
    baseline: ServedVersion
    candidate: ServedVersion
    default: bool  # requests that name no version reach the canary's label

    @property
    def id(self) -> str:
        return self.canary.id

    @cached_property
    def header(self) -> bytes | None:
        """The sticky header's name as REST request heads hold it."""
        return None if self.canary.header is None else self.canary.header.encode()

    def applies(self, label: str | None) -> bool:
        return label == self.canary.label or (label is None and self.default)

    def pick(self, sticky: bytes | None) -> ServedVersion:
        """The version that answers a request whose sticky header is STICKY (None: absent)."""
        canary = self.canary
        # a split, not a secret: any uniform draw will do
        share = random.random() if sticky is None else canary.sticky_share(sticky)  # noqa: S311
        return self.candidate if share * 100 < canary.weight else self.baseline

    def role(self, served: ServedVersion) -> str:
        return "candidate" if served is self.candidate else "baseline"


def compare(ours: list[Any], theirs: list[Any], tolerance: float) -> tuple[str, float]:
    """How the candidate's outputs (THEIRS) agree with the baseline's (OURS): ``agree``,
    ``labels_differ`` (an output that is not floating point differs: a class, a string) or
    ``values_differ`` (a float further than TOLERANCE); and the largest absolute difference
    between floating-point outputs (inf when their shapes differ)."""
    labels_equal, largest = True, 0.0
    for a, b in zip(ours, theirs, strict=True):
        left, right = np.asarray(a), np.asarray(b)
        floating = left.dtype.kind in "fc" and right.dtype.kind in "fc"
        if left.shape != right.shape:
            if not floating:
                labels_equal = False
            largest = float("inf")
        elif floating:
            if left.size:
                difference = np.abs(left.astype(np.float64) - right.astype(np.float64))
                both_nan = np.isnan(left) & np.isnan(right)
                difference = np.where(both_nan, 0.0, difference)
                largest = max(largest, float(np.nan_to_num(difference, nan=np.inf).max()))
        elif not np.array_equal(left, right):
            labels_equal = False
    if not labels_equal:
        return "labels_differ", largest
    return ("agree" if largest <= tolerance else "values_differ"), largest


class ShadowCounter(Protocol):
    """Where shadow copies' outcomes are counted (the metrics)."""

    def shadowed(
        self, route: Route, outcome: str, seconds: float | None, largest: float | None
    ) -> None: ...


class Shadows:
    """The candidates' copies of requests, run on one thread of their own: the request that
    was copied has been answered already, and a copy never waits in a version's queue. At most
    ``SHADOW_QUEUE`` wait; more are dropped (``mserve_shadow_comparisons_total{outcome=
    "dropped"}``) rather than let shadow work grow without bound."""

    def __init__(self, metrics: ShadowCounter) -> None:
        self.metrics = metrics
        self.room = threading.BoundedSemaphore(SHADOW_QUEUE)
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="mserve-shadow")

    def copy(self, route: Route, feeds: dict[str, Any], outputs: list[Any]) -> None:
        if not self.room.acquire(blocking=False):
            self.metrics.shadowed(route, "dropped", None, None)
            return
        try:
            self.thread.submit(self._run, route, feeds, outputs)
        except RuntimeError:  # shutting down
            self.room.release()

    def _run(self, route: Route, feeds: dict[str, Any], outputs: list[Any]) -> None:
        try:
            started = time.perf_counter()
            theirs = route.candidate.runner.run_arrays(feeds)
            seconds = time.perf_counter() - started
            outcome, largest = compare(outputs, theirs, route.canary.tolerance)
            self.metrics.shadowed(route, outcome, seconds, largest)
        except Exception as exc:  # the candidate failed on it: counted, logged at debug
            log.debug(
                "shadow of %s:%s failed: %s", route.candidate.model, route.candidate.version, exc
            )
            self.metrics.shadowed(route, "error", None, None)
        finally:
            self.room.release()

    def stop(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)
