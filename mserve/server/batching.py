"""Running inference: inline on the event loop, or through a dynamic batcher.

Inline (batching off) is the fastest path for small models: no thread hop, no queue. The
batcher gathers requests for up to ``max_queue_delay_ms`` (or while the previous batch runs),
concatenates them along the batch axis, runs one onnxruntime call on its own thread (which
releases the GIL, so the event loop keeps parsing requests), and splits the outputs back.
Admission is bounded: a full queue answers at once with 503, and a request waits at most its
timeout (504), after which it is dropped from the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mserve.errors import Overloaded, TimedOut

from .settings import BatchSettings

if TYPE_CHECKING:
    from mserve.runtime import Arrays, ModelRunner
    from mserve.signature import Signature


class Observer(Protocol):
    """Where executors report timings (the metrics)."""

    def batch(self, size: int, queue_s: float, inference_s: float) -> None: ...

    def inference_only(self, inference_s: float) -> None: ...


class Executor(Protocol):
    """Runs one version's inferences. There is no close(): an executor lives as long as the
    requests that hold its version, and its thread ends when it is garbage-collected (how
    ThreadPoolExecutor works), so a version swapped out still answers what it has queued."""

    async def run(self, feeds: Arrays) -> list[Any]: ...


class Inline:
    def __init__(self, runner: ModelRunner, observer: Observer | None = None) -> None:
        self.runner = runner
        self.observer = observer

    async def run(self, feeds: Arrays) -> list[Any]:
        return self.run_now(feeds)

    def run_now(self, feeds: Arrays) -> list[Any]:
        if self.observer is None:
            return self.runner.run_arrays(feeds)
        start = time.perf_counter()
        outputs = self.runner.run_arrays(feeds)
        self.observer.inference_only(time.perf_counter() - start)  # no queue, no batch here
        return outputs


@dataclass
class _Item:
    feeds: Arrays
    rows: int
    future: asyncio.Future[list[Any]]
    queued_at: float


class Batcher:
    def __init__(
        self, runner: ModelRunner, settings: BatchSettings, observer: Observer | None = None
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.observer = observer
        self.pending: deque[_Item] = deque()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mserve-batch")

    async def run(self, feeds: Arrays) -> list[Any]:
        if len(self.pending) >= self.settings.max_queue:
            raise Overloaded("the model's queue is full; retry later")
        loop = asyncio.get_running_loop()
        item = _Item(feeds, rows_of(feeds), loop.create_future(), time.perf_counter())
        self.pending.append(item)
        self._kick(loop)
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), self.settings.timeout_s)
        except TimeoutError:
            item.future.cancel()  # a batch not yet started skips it
            raise TimedOut(f"no answer within {self.settings.timeout_s:g} s") from None

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.busy or not self.pending:
            return
        rows = sum(item.rows for item in self.pending)
        delay = self.settings.max_queue_delay_ms / 1000
        if rows >= self.settings.max_batch_size or delay <= 0:
            self._dispatch(loop)
        elif self.timer is None:
            self.timer = loop.call_later(delay, self._dispatch, loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.busy:
            return
        batch: list[_Item] = []
        rows = 0
        while self.pending:
            item = self.pending[0]
            if item.future.done():  # timed out while queued
                self.pending.popleft()
                continue
            if batch and (
                rows + item.rows > self.settings.max_batch_size
                or not _stackable(batch[0].feeds, item.feeds)
            ):
                break
            batch.append(self.pending.popleft())
            rows += item.rows
        if not batch:
            return
        self.busy = True
        started = time.perf_counter()
        running = loop.run_in_executor(self.thread, self._infer, batch)
        running.add_done_callback(lambda done: self._finish(loop, batch, done, started))

    def _infer(self, batch: list[_Item]) -> tuple[list[Any], float]:
        import numpy as np

        start = time.perf_counter()
        if len(batch) == 1:
            return self.runner.run_arrays(batch[0].feeds), time.perf_counter() - start
        feeds = {
            name: np.concatenate([item.feeds[name] for item in batch]) for name in batch[0].feeds
        }
        return self.runner.run_arrays(feeds), time.perf_counter() - start

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Item],
        done: asyncio.Future[tuple[list[Any], float]],
        started: float,
    ) -> None:
        self.busy = False
        error = done.exception()
        if error is not None:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            outputs, inference_s = done.result()
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(
                        outputs
                        if len(batch) == 1
                        else [o[offset : offset + item.rows] for o in outputs]
                    )
                offset += item.rows
            if self.observer is not None:
                self.observer.batch(offset, started - batch[0].queued_at, inference_s)
        self._kick(loop)


def batchable(signature: Signature) -> bool:
    """Batching needs every input and output to have a variable first (batch) axis."""
    tensors = [*signature.inputs, *signature.outputs]
    return all(t.shape and not isinstance(t.shape[0], int) for t in tensors)


def make_executor(
    runner: ModelRunner, settings: BatchSettings, observer: Observer | None = None
) -> Executor:
    if settings.batching and batchable(runner.signature):
        return Batcher(runner, settings, observer)
    return Inline(runner, observer)


def rows_of(feeds: Arrays) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _stackable(a: Arrays, b: Arrays) -> bool:
    return all(
        a[name].shape[1:] == b[name].shape[1:] and a[name].dtype == b[name].dtype for name in a
    )
