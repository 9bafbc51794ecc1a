"""Large JSON requests decoded, and their answers encoded, in other processes, so that neither
holds the server.

Parsing JSON (orjson), reading its lists into numpy and writing a JSON answer are single C
calls that hold the GIL for their whole length (about 35 ms per MB of request on the project
VM), so one 50 MB body paused every other request and the health probes for over a second,
whichever thread it was handled on. A request whose JSON is over ``APART_BYTES`` (once
inflated, if it came compressed) is therefore decoded by a codec process, with the same code
(``v2``, ``tfserving``); its tensors come back as raw bytes that the server takes as they are
(``np.frombuffer``), and large outputs go the same way for the answer to be written. The event
loop only waits; the server itself only copies bytes.

The processes are started when first needed (at most ``PROCESSES``, kept for later requests)
and speak frames over their standard input and output: a JSON header and raw bytes, never
pickle. A job that outlives the request's timeout, or whose request is cancelled, ends by
killing its process (the next job starts another); one that dies at work fails its request
alone (500, logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import orjson

from mserve.errors import InputError, MserveError, TimedOut
from mserve.protocol import tfserving, v2
from mserve.protocol.compression import inflate
from mserve.protocol.tensors import (
    Array,
    InferRequest,
    Plan,
    from_wire,
    pack_strings,
    unpack_strings,
)
from mserve.signature import Signature, numpy_dtype

if TYPE_CHECKING:  # not imported at run time: the codec process loads no model code
    from .served import ServedVersion

log = logging.getLogger("mserve.server")

Reply = TypeVar("Reply")
Buffer = bytes | memoryview
APART_BYTES = 256 * 1024  # JSON over this is handled apart: about 9 ms of parsing on the VM
PROCESSES = min(4, os.cpu_count() or 1)
FRAME = struct.Struct("<IQ")  # a frame: its JSON header's length, then its payload's
# the child imports this very mserve: the parent's sys.path, nothing from its cwd (-P)
CHILD = "import sys; sys.path[:] = sys.argv[1:]; import mserve.server.apart as a; a.main()"
ERRORS: dict[int, type[MserveError]] = {400: InputError}  # what decoding may blame on a request


class CodecFailed(MserveError):
    """A codec process died, or failed: the server's fault, never the client's."""


class Processes:
    """The codec processes of one server."""

    def __init__(self, processes: int = PROCESSES) -> None:
        self.idle: list[CodecProcess] = []
        self.free = asyncio.Semaphore(processes)
        self.threads = ThreadPoolExecutor(processes, thread_name_prefix="mserve-codec")
        self.closed = False
        weakref.finalize(self, _close_all, self.idle)  # a server never stopped (tests)

    async def run(
        self, job: dict[str, Any], parts: list[Buffer], deadline: float
    ) -> tuple[dict[str, Any], bytes]:
        """JOB's answer and payload from a codec process, by DEADLINE (``perf_counter``)."""
        if not await _by(deadline, self.free.acquire()):
            raise TimedOut("no answer within the request's timeout")
        loop = asyncio.get_running_loop()
        process = None
        try:
            while self.idle and process is None:
                process = self.idle.pop()
                if process.process.poll() is not None:
                    process = None  # it died idle: another is started
            if process is None:
                process = await loop.run_in_executor(self.threads, CodecProcess)
            work = loop.run_in_executor(self.threads, process.run, job, parts)
            finished = False  # and if cancelled (the request is gone)
            try:
                finished = await _by(deadline, asyncio.shield(work))
            except MserveError:
                finished = True  # it answered with the request's fault, or died (and was reaped)
                raise
            finally:
                if not finished:  # it is still at work: this stops it
                    process.kill()
                    work.add_done_callback(_ignored)
            if not finished:
                raise TimedOut("no answer within the request's timeout")
            return work.result()
        finally:
            if process is not None and process.alive and not self.closed:
                self.idle.append(process)
            self.free.release()

    def close(self) -> None:
        self.closed = True
        _close_all(self.idle)
        self.threads.shutdown(wait=False, cancel_futures=True)


def _close_all(idle: list[CodecProcess]) -> None:
    for process in idle:
        process.close()
    idle.clear()


async def _by(deadline: float, waiting: Any) -> bool:
    """Whether WAITING ended by DEADLINE (it is cancelled if not)."""
    try:
        await asyncio.wait_for(waiting, deadline - time.perf_counter())
    except TimeoutError:
        return False
    return True


def _ignored(work: asyncio.Future[Any]) -> None:
    """Takes the failure of a job nobody waits for any more (else asyncio logs it)."""
    if not work.cancelled():
        work.exception()


class CodecProcess:
    """One codec process, used by one thread at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-c", CHILD, *sys.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.alive = True

    def run(self, job: dict[str, Any], parts: list[Buffer]) -> tuple[dict[str, Any], bytes]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            write_frame(self.process.stdin, job, parts)
            answer, payload = read_frame(self.process.stdout)
        except (OSError, EOFError, ValueError):
            if self.alive:  # not killed on purpose
                log.error("a codec process ended (exit code %s)", self.process.poll())
            self.close()
            raise CodecFailed("handling the request's JSON failed") from None
        if "error" in answer:
            raise ERRORS.get(answer["status"], CodecFailed)(str(answer["error"]))
        return answer, payload

    def kill(self) -> None:
        """End the process; the thread at work with it reads the end of its output at once,
        and closes it (its pipes are never closed under a thread reading them)."""
        self.alive = False
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        """End the process and close its pipes: by the thread using it, or when idle."""
        self.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # what was left to write has no reader
                    pipe.close()


# -- the server's side of a request ----------------------------------------------------------


@dataclass(frozen=True)
class Apart(Generic[Reply]):
    """A REST request whose JSON is large, or may be (it came compressed), and what its route
    knows of it: decoded and answered off the event loop, in a codec process when large."""

    processes: Processes
    protocol: str  # "v2" or "tfserving"
    verb: str
    body: bytes
    header_length: int | None  # V2's binary extension
    encoding: str | None  # gzip or deflate, else None
    limit: int  # the most the body may inflate to
    reply: Callable[[ServedVersion, bytes, int | None], Reply]  # the answer, as the route sends it

    async def decode(self, served: ServedVersion, deadline: float) -> Any:
        """The request (an ``InferRequest`` or ``TfRequest``)."""
        body = self.body
        if self.encoding is not None:  # on a thread: zlib lets go of the GIL
            body = await asyncio.to_thread(inflate, body, self.encoding, self.limit)
        json_length = len(body) if self.header_length is None else self.header_length
        if json_length <= APART_BYTES:  # small after all: a thread will do
            return await asyncio.to_thread(
                decoded, self.protocol, self.verb, body, self.header_length, served.plan
            )
        job = {
            "job": "decode",
            "protocol": self.protocol,
            "verb": self.verb,
            "header_length": self.header_length,
            **_plan(served.plan),
        }
        answer, payload = await self.processes.run(job, [body], deadline)
        feeds: dict[str, Array] = {}
        offset = 0
        for name, shape, size in answer["tensors"]:
            raw = memoryview(payload)[offset : offset + size]
            offset += size
            dtype = served.plan.inputs[name].spec.dtype
            if dtype == "string":
                array = np.array(unpack_strings(bytes(raw), name), dtype=object)
            else:
                array = np.frombuffer(raw, dtype=numpy_dtype(dtype))
            feeds[name] = array.reshape(shape)
        if self.protocol == "v2":
            outputs = [(name, binary) for name, binary in answer["outputs"]]
            return InferRequest(feeds, outputs, answer["id"])
        return tfserving.TfRequest(self.verb, feeds, answer["row_form"], answer["output"])

    async def encode(
        self, served: ServedVersion, request: Any, outputs: list[Array], deadline: float
    ) -> Reply:
        """The answer to REQUEST."""
        labels = served.runner.class_labels
        if sum(array.nbytes for array in outputs) <= APART_BYTES // 4:  # JSON is longer
            payload, header_length = await asyncio.to_thread(
                functools.partial(
                    encoded,
                    self.protocol,
                    served.plan,
                    request,
                    outputs,
                    model=served.model,
                    version=served.version_text,
                    labels=labels,
                )
            )
            return self.reply(served, payload, header_length)
        job = {
            "job": "encode",
            "protocol": self.protocol,
            "model": served.model,
            "version": served.version_text,
            "labels": labels,
            **_plan(served.plan),
        }
        if self.protocol == "v2":
            job.update(wanted=request.outputs, id=request.id)
        else:
            job.update(verb=request.verb, row_form=request.row_form, output=request.output)
        parts = [_raw(array) for array in outputs]
        job["tensors"] = [
            ("BYTES" if a.dtype == object else a.dtype.str, list(a.shape), len(part))
            for a, part in zip(outputs, parts, strict=True)
        ]
        answer, payload = await self.processes.run(job, parts, deadline)
        return self.reply(served, payload, answer["header_length"])


def decoded(protocol: str, verb: str, body: bytes, header_length: int | None, plan: Plan) -> Any:
    """BODY's request, as the route's protocol reads it."""
    if protocol == "v2":
        return v2.decode_request(body, header_length, plan)
    return tfserving.decode_request(verb, body, plan)


def encoded(
    protocol: str,
    plan: Plan,
    request: Any,
    outputs: list[Array],
    *,
    model: str,
    version: str,
    labels: list[str] | None,
) -> tuple[bytes, int | None]:
    """The answer's body, and V2's JSON header length when binary outputs follow."""
    if protocol == "v2":
        return v2.encode_response(model, version, plan, request, outputs)
    return tfserving.encode_reply(request, plan, outputs, labels), None


def _plan(plan: Plan) -> dict[str, Any]:
    return {"signature": plan.signature.to_dict(), "outputs": list(plan.outputs)}


def _raw(array: Array) -> Buffer:
    """ARRAY's bytes, row-major: without a copy when it is laid out so already."""
    if array.dtype == object:
        return pack_strings(array)
    if not array.size:
        return b""  # a view of nothing cannot be cast
    return np.ascontiguousarray(array).data.cast("B")


# -- the wire between them ----------------------------------------------------------------------


def write_frame(stream: IO[bytes], header: dict[str, Any], parts: list[Buffer]) -> None:
    text = orjson.dumps(header)
    stream.write(FRAME.pack(len(text), sum(len(part) for part in parts)))
    stream.write(text)
    for part in parts:
        stream.write(part)
    stream.flush()


def read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    text_length, payload_length = FRAME.unpack(_exactly(stream, FRAME.size))
    text = _exactly(stream, text_length)
    return orjson.loads(text), _exactly(stream, payload_length)


def _exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)  # one allocation, filled by reads that let go of the GIL
    if len(data) != size:
        raise EOFError
    return data


# -- the codec process --------------------------------------------------------------------------


def main() -> None:
    """Answer jobs from standard input until it closes, on standard output."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the server's to handle
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the frames
    plans: dict[bytes, Plan] = {}
    while True:
        try:
            job, payload = read_frame(source)
        except EOFError:
            return
        answer: dict[str, Any]
        parts: list[Buffer]
        try:
            plan = _plan_of(job, plans)
            if job["job"] == "decode":
                answer, parts = _decode(job, payload, plan)
            else:
                answer, parts = _encode(job, payload, plan)
        except MserveError as exc:
            answer, parts = {"error": str(exc), "status": exc.http_status}, []
        except Exception as exc:  # a fault of the codec, not the request's
            print(f"mserve codec process: {type(exc).__name__}: {exc}", file=sys.stderr)
            answer, parts = {"error": "handling the request's JSON failed", "status": 500}, []
        write_frame(sink, answer, parts)


def _plan_of(job: dict[str, Any], plans: dict[bytes, Plan]) -> Plan:
    key = orjson.dumps([job["signature"], job["outputs"]])
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= 64:
            plans.clear()
        plan = plans[key] = Plan.of(Signature.from_dict(job["signature"]), job["outputs"])
    return plan


def _decode(job: dict[str, Any], body: bytes, plan: Plan) -> tuple[dict[str, Any], list[Buffer]]:
    request = decoded(job["protocol"], job["verb"], body, job["header_length"], plan)
    if job["protocol"] == "v2":
        answer = {"outputs": request.outputs, "id": request.id}
    else:
        answer = {"row_form": request.row_form, "output": request.output}
    parts = [_raw(array) for array in request.feeds.values()]
    answer["tensors"] = [
        (name, list(array.shape), len(part))
        for (name, array), part in zip(request.feeds.items(), parts, strict=True)
    ]
    return answer, parts


def _encode(job: dict[str, Any], payload: bytes, plan: Plan) -> tuple[dict[str, Any], list[Buffer]]:
    outputs, offset = [], 0
    for dtype, shape, size in job["tensors"]:
        raw = payload[offset : offset + size]
        offset += size
        if dtype == "BYTES":
            outputs.append(from_wire(raw, dtype, shape))
        else:
            outputs.append(np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape))
    if job["protocol"] == "v2":
        wanted = [(name, binary) for name, binary in job["wanted"]]
        request: Any = InferRequest({}, wanted, job["id"])
    else:
        request = tfserving.TfRequest(job["verb"], {}, job["row_form"], job["output"])
    body, header_length = encoded(
        job["protocol"],
        plan,
        request,
        outputs,
        model=job["model"],
        version=job["version"],
        labels=job["labels"],
    )
    return {"header_length": header_length}, [body]
