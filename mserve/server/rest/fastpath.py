"""uvicorn's httptools protocol with a direct path for inference requests.

On the 2-core project VM (benchmarks/RESULTS.md), uvicorn's ASGI layer cost about as much per
request as parsing, inference and encoding together: a bare ASGI app answered half the
requests of the same handler on a raw uvloop protocol. Per request, ASGI means a scope, a request
cycle, an event and a task, and a regex check of every response header.

So a POST to an inference URL the app has already routed (V2 ``.../infer`` or TF Serving
``...:predict``) skips ASGI. The body is gathered here and handed to ``RestApp.infer_direct``,
which answers at once when the version runs inline, or with a coroutine when it batches.

Everything else takes uvicorn's own path: every other route, a first request, uploads that
announce ``Expect: 100-continue``, upgrades, and a request pipelined behind one still running.
So do connection handling, keep-alive, flow control and shutdown.

This subclasses uvicorn internals, so pyproject pins the uvicorn versions it was tested with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from ..connections import Connections
    from .app import Answer, RestApp

LARGE_ANSWER = 64 * 1024  # a larger answer is written after its head, not joined to it


class _Discard:
    """The parser of a connection being refused: what still arrives is dropped."""

    def feed_data(self, data: bytes) -> None:
        pass


class _NoEvent:
    def set(self) -> None:
        """uvicorn sets its cycle's event when the connection is lost; nothing waits here."""


class _Direct:
    """Stands in for uvicorn's RequestResponseCycle while a direct request is on the
    connection: uvicorn's own code reads ``response_complete`` (to queue a request pipelined
    behind it), ``keep_alive`` (cleared by a graceful shutdown) and ``disconnected``."""

    # disconnected is a slot, not a class attribute: uvicorn sets it when a client goes away
    # mid-body, which on a read-only attribute raised (and logged a traceback) per drop.
    __slots__ = (
        "chunks",
        "disconnected",
        "keep_alive",
        "path",
        "response_complete",
        "size",
        "started",
    )
    message_event = _NoEvent()

    def __init__(self, path: str, keep_alive: bool) -> None:
        self.path = path
        self.keep_alive = keep_alive
        self.started = time.perf_counter()
        self.chunks: list[bytes] = []
        self.size = 0
        self.response_complete = False
        self.disconnected = False


class DirectHttpProtocol(HttpToolsProtocol):
    app: RestApp  # set by protocol_for()
    limit: int
    guard: Connections
    _reading_paused_for_writes = False
    # Loop time since when a request is awaited: the connection's start or the last answer;
    # None while one is whole and being answered. Stamped where the fast path already passes
    # (no hook per request: each costs a few per cent of a tiny model's rate).
    reading_since: float | None = None
    fresh = True  # no request has begun to be answered on this connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asgi_cycles: list[Any] = []  # uvicorn's cycles not yet answered, oldest first

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            if self.guard.linger(self):
                self._refuse(503, b"too many connections; retry later")
            else:
                transport.abort()
            return
        self.reading_since = self.loop.time()

    def _refuse(self, status: int, message: bytes) -> None:
        """Answer STATUS before (or instead of) reading a request, and close. Our side is
        half-closed first, so the answer is not lost to a reset if the request still comes."""
        body = b'{"error":"' + message + b'"}'
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    b"content-type: application/json\r\ncontent-length: ",
                    str(len(body)).encode(),
                    b"\r\nconnection: close\r\n\r\n",
                    body,
                )
            )
        )
        self.transport.write_eof()
        self.parser = _Discard()  # type: ignore[assignment]
        self.loop.call_later(1.0, self.transport.close)

    def sweep(self, now: float, timeout: float) -> None:
        since = self.reading_since
        if since is not None and now - since > timeout and not self.transport.is_closing():
            self.reading_since = None
            self.guard.closed(self)
            if self.fresh or self.timeout_keep_alive_task is not None:
                # Nothing asked on it yet, or idle since an answer (no byte since cancels
                # uvicorn's keep-alive timer): closed without an answer nobody waits for.
                self.transport.close()
            else:
                self._refuse(408, b"the request did not arrive within %g s" % timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        # uvicorn marks only its newest cycle as disconnected; one answering while others are
        # pipelined behind it would then write to the closed transport, which uvloop refuses
        # with a RuntimeError that uvicorn logs as an application error.
        for cycle in self._asgi_cycles:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # The next request's time starts, unless it has already arrived (pipelined).
        self.reading_since = None if self.pipeline else self.loop.time()
        if self._asgi_cycles:
            self._asgi_cycles = [c for c in self._asgi_cycles if not c.response_complete]
        super().on_response_complete()

    def on_headers_complete(self) -> None:
        self.fresh = False
        path = None
        if (
            self.parser.get_method() == b"POST"
            and (self.cycle is None or self.cycle.response_complete)
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
            and self.limit_concurrency is None
        ):
            path = self.app.direct_route(self.url)
        if path is None:
            previous = self.cycle
            super().on_headers_complete()
            if self.cycle is not previous:
                self._asgi_cycles.append(self.cycle)
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = _Direct(path, keep_alive)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle  # uvicorn's cycle, or a _Direct
        if type(cycle) is not _Direct:
            super().on_body(body)
            return
        cycle.size += len(body)
        if cycle.size <= self.limit:  # past it the body is dropped and the answer is a 413
            cycle.chunks.append(body)

    def on_message_complete(self) -> None:
        self.reading_since = None
        cycle: Any = self.cycle  # uvicorn's cycle, or a _Direct
        if type(cycle) is not _Direct:
            super().on_message_complete()
            return
        chunks = cycle.chunks
        body = (
            None if cycle.size > self.limit else chunks[0] if len(chunks) == 1 else b"".join(chunks)
        )
        cycle.chunks = []
        answer = self.app.infer_direct(cycle.path, self.headers, body, cycle.started)
        if isinstance(answer, tuple):
            self._respond(cycle, answer)
            return
        task = self.loop.create_task(self._respond_later(cycle, answer))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _respond_later(self, cycle: _Direct, answer: Coroutine[Any, Any, Answer]) -> None:
        self._respond(cycle, await answer)

    def _respond(self, cycle: _Direct, answer: Answer) -> None:
        cycle.response_complete = True
        if self.transport.is_closing():  # the client went away
            self.on_response_complete()
            return
        status, headers, body = answer
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        if len(body) <= LARGE_ANSWER:
            content += (b"\r\n", body)
            self.transport.write(b"".join(content))
        else:  # not copied into one: a copy of megabytes holds the loop (and the GIL)
            content.append(b"\r\n")
            self.transport.writelines((b"".join(content), body))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
        if self.flow.write_paused:
            # A client that sends without reading its answers stops being read, rather than
            # growing the write buffer without bound.
            self.flow.pause_reading()
            self._reading_paused_for_writes = True

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._reading_paused_for_writes:
            self._reading_paused_for_writes = False
            self.flow.resume_reading()


def protocol_for(app: RestApp, guard: Connections) -> type[asyncio.Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to APP and GUARD."""
    return type(
        "MserveHttpProtocol",
        (DirectHttpProtocol,),
        {"app": app, "limit": app.settings.max_body_bytes, "guard": guard},
    )
