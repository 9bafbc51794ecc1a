"""Running inference: without batching (cheap requests inline on the event loop, the rest on
the version's threads), or through a dynamic batcher.

Inline is the fastest path for small models: no thread hop, no queue; it is taken only while
a call is known to be cheap, so no request holds the loop for long. The batcher gathers
requests for up to ``max_queue_delay_ms`` (or while the previous batch runs), concatenates
them along the batch axis, runs one onnxruntime call on its own thread (which releases the
GIL, so the event loop keeps parsing requests), and splits the outputs back.

Admission is bounded in both: the executor is asked before the body is decoded, a full queue
answers at once with 503, and a request waits at most its timeout (504), after which its place
is free and its run skipped or stopped.

There is no close(): an executor lives as long as the requests that hold its version, and its
threads end when it is garbage-collected (how ThreadPoolExecutor works), so a version swapped
out still answers what it has queued.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mserve.errors import Overloaded, TimedOut

from .settings import BatchSettings

if TYPE_CHECKING:
    from mserve.runtime import Arrays, ModelRunner
    from mserve.signature import Signature

Result = TypeVar("Result")
INLINE_BYTES = 64 * 1024  # a larger body is decoded off the loop
INLINE_SECONDS = 0.001  # a version whose calls take longer runs off the loop
COST_DECAY = 0.9  # per call: how fast a slow call is forgotten
WORKERS = 2  # threads per version without batching: a slow model cannot take another's


class Observer(Protocol):
    """Where executors report timings (the metrics)."""

    def batch(self, size: int, queue_s: float, inference_s: float) -> None: ...

    def inference_only(self, inference_s: float) -> None: ...


class Unbatched:
    """Batching off: each request runs on its own. A cheap one (a small body, on a version whose
    recent calls all took under ``INLINE_SECONDS``) is answered within the caller's turn: no
    thread hop, the fast path. Anything else runs on the version's threads, so the event loop
    keeps answering other models and the probes; onnxruntime releases the GIL while it runs.
    ``in_flight`` counts requests admitted and not yet answered; past ``max_queue`` more are
    refused at once (503). A request not answered by its timeout gets 504 and frees its place
    at once; its run is skipped when it has not started, and stopped when it has.
    """

    def __init__(
        self, runner: ModelRunner, settings: BatchSettings, observer: Observer | None = None
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.observer = observer
        self.in_flight = 0
        self.limit = settings.max_queue + WORKERS
        # seconds a call held the thread that ran it, as a decaying maximum: unknown (so off
        # the loop) until a few calls have shown the version is cheap, and after one slow call
        # off the loop again until the cheap ones outweigh it
        self.cost = 2 * INLINE_SECONDS
        self.cheap = False  # cost < INLINE_SECONDS
        self.threads = ThreadPoolExecutor(WORKERS, thread_name_prefix="mserve-run")

    def measured(self, seconds: float) -> None:
        cost = self.cost * COST_DECAY
        self.cost = cost = seconds if seconds > cost else cost
        self.cheap = cost < INLINE_SECONDS

    def run_now(self, feeds: Arrays) -> list[Any]:
        if self.observer is None:
            return self.runner.run_arrays(feeds)
        start = time.perf_counter()
        outputs = self.runner.run_arrays(feeds)
        self.observer.inference_only(time.perf_counter() - start)  # no queue, no batch here
        return outputs

    def admit(self) -> None:
        if self.in_flight >= self.limit:
            raise Overloaded("the model's queue is full; retry later")
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    @property
    def waiting(self) -> int:
        """Admitted requests not yet on a thread (each thread runs one at a time)."""
        return max(0, self.in_flight - WORKERS)

    async def call(self, job: Callable[[Run], Result], started: float) -> Result:
        """JOB on one of the version's threads, answered by ``started + timeout``. JOB gets the
        function that runs the model, so a request that times out can stop its own run."""
        run = Run(self.runner)
        loop = asyncio.get_running_loop()
        waiting = loop.run_in_executor(self.threads, run.job, job)
        try:
            result, inference_s = await asyncio.wait_for(
                waiting, self.settings.timeout_s - (time.perf_counter() - started)
            )
        except TimeoutError:
            run.stop()  # wait_for cancelled the job if it had not started
            raise TimedOut(f"no answer within {self.settings.timeout_s:g} s") from None
        except asyncio.CancelledError:  # the grace of a shutdown is over, or the caller left
            run.stop()
            raise
        self.measured(run.cost)
        if self.observer is not None and inference_s:
            self.observer.inference_only(inference_s)
        return result


class Run:
    """One request's run on a worker thread, which its timeout can stop."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.options: Any = None
        self.stopped = False
        self.cost = 0.0
        self.inference_s = 0.0

    def job(self, job: Callable[[Run], Result]) -> tuple[Result, float]:
        start = time.thread_time()
        result = job(self)
        # CPU time, not wall time: what the call would hold the loop for, without the waits
        # for the GIL that the loop's own work causes (a wall time kept a cheap model off the
        # loop under load). onnxruntime's calling thread works, or spins waiting for its pool,
        # through the whole run, so a model's parallel work is counted too.
        self.cost = time.thread_time() - start
        return result, self.inference_s

    def __call__(self, feeds: Arrays) -> list[Any]:
        self.options = _stoppable()  # before the check: a stop in between still reaches the run
        if self.stopped:
            raise TimedOut("timed out before it ran")
        start = time.perf_counter()
        try:
            return self.runner.run_arrays(feeds, self.options)
        finally:
            self.inference_s = time.perf_counter() - start

    def stop(self) -> None:
        self.stopped = True
        if self.options is not None:
            self.options.terminate = True


@dataclass(eq=False)  # compared by identity: a batch is searched for one
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
        self.in_flight = 0  # admitted, not yet answered (timed-out requests are answered)
        self.running: tuple[list[_Item], Any] | None = None  # the batch on the thread
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mserve-batch")

    def admit(self) -> None:
        running = self.running[0] if self.running is not None else ()
        # the answered (timed-out) ones of the running batch are out of in_flight already
        waiting = self.in_flight - sum(not item.future.done() for item in running)
        if waiting >= self.settings.max_queue:
            raise Overloaded("the model's queue is full; retry later")
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    @property
    def waiting(self) -> int:
        """Requests queued for a batch that has not started."""
        return sum(not item.future.done() for item in self.pending)

    async def run(self, feeds: Arrays, started: float) -> list[Any]:
        loop = asyncio.get_running_loop()
        item = _Item(feeds, rows_of(feeds), loop.create_future(), time.perf_counter())
        self.pending.append(item)
        self._kick(loop)
        try:
            return await asyncio.wait_for(
                asyncio.shield(item.future),
                self.settings.timeout_s - (time.perf_counter() - started),
            )
        except TimeoutError:
            self._abandon(item)
            raise TimedOut(f"no answer within {self.settings.timeout_s:g} s") from None
        except asyncio.CancelledError:  # the grace of a shutdown is over, or the caller left
            self._abandon(item)
            raise

    def _abandon(self, item: _Item) -> None:
        item.future.cancel()  # a batch not yet started skips it
        if self.running is not None and item in self.running[0]:
            batch, options = self.running
            if all(other.future.done() for other in batch):
                options.terminate = True  # nobody waits for this batch any more

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
        options = _stoppable()
        self.running = (batch, options)
        running = loop.run_in_executor(self.thread, self._infer, batch, options)
        running.add_done_callback(lambda done: self._finish(loop, batch, done, started))

    def _infer(self, batch: list[_Item], options: Any) -> tuple[list[Any], float]:
        import numpy as np

        start = time.perf_counter()
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {
                name: np.concatenate([item.feeds[name] for item in batch])
                for name in batch[0].feeds
            }
        return self.runner.run_arrays(feeds, options), time.perf_counter() - start

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Item],
        done: asyncio.Future[tuple[list[Any], float]],
        started: float,
    ) -> None:
        self.busy = False
        self.running = None
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


def _stoppable() -> Any:
    """Run options whose ``terminate`` stops the run; that stop is ours, not worth a log line."""
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.log_severity_level = 4  # fatal only
    return options


def batchable(signature: Signature) -> bool:
    """Batching needs every input and output to have a variable first (batch) axis."""
    tensors = [*signature.inputs, *signature.outputs]
    return all(t.shape and not isinstance(t.shape[0], int) for t in tensors)


def make_executor(
    runner: ModelRunner, settings: BatchSettings, observer: Observer | None = None
) -> Unbatched | Batcher:
    if settings.batching and batchable(runner.signature):
        return Batcher(runner, settings, observer)
    return Unbatched(runner, settings, observer)


def rows_of(feeds: Arrays) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _stackable(a: Arrays, b: Arrays) -> bool:
    return all(
        a[name].shape[1:] == b[name].shape[1:] and a[name].dtype == b[name].dtype for name in a
    )
