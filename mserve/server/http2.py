"""gRPC's HTTP/2 transport: unary calls, on the HTTP server's event loop.

Why not grpcio's server: grpc.aio polls its sockets on a thread of its own and hands each call
to the event loop, and on one core that costs more than the inference; with the pure-Python h2
state machine a bare echo of ModelInfer still ran at 40 % of the REST rate. Framing by hand is
small for unary calls and answers an inline version inside the socket callback, as the REST
fast path does (benchmarks/RESULTS.md has the figures). HPACK comes from the ``hpack`` library.

What it does: the connection preface and SETTINGS, PING, GOAWAY both ways, RST_STREAM, headers
over CONTINUATION frames, padding, flow control both ways, gzip-compressed request messages and
a message-size limit (RESOURCE_EXHAUSTED). Streaming calls are not served (ModelStreamInfer is
UNIMPLEMENTED). Responses never touch HPACK's dynamic table, so they need no encoder state.

What bounds a client: a stream may send one message of at most the limit (its window), and the
connection's window is credited back only once a message is taken or dropped, so a connection
holds at most two messages' worth of unread bytes; header blocks are capped; a client that does
not read its replies stops being read.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable
from typing import Any
from urllib.parse import quote

from hpack import Decoder, Encoder, HPACKError, NeverIndexedHeaderTuple

from mserve.errors import MserveError
from mserve.protocol.compression import inflate

from .connections import Connections
from .grpc import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    InferenceService,
    Outcome,
    failure,
)

log = logging.getLogger("mserve.server")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM = 0, 1, 6, 7
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 9, 11
MAX_STREAMS = 1024
MAX_FRAME = 16384  # HTTP/2's default, what we accept; we send no more than the peer allows
MAX_HEADER_LIST = 64 * 1024
MAX_MESSAGE_TEXT = 1024  # grpc-message is cut to this: it may repeat a client's names
HEADER_CACHE = 64  # distinct header blocks remembered per connection
DEFAULT_WINDOW, DEFAULT_FRAME, LARGEST_WINDOW = 65535, 16384, (1 << 31) - 1
FRAME_HEADER = struct.Struct(">HBBBI")  # length (24 bits, as 16 + 8), type, flags, stream


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream) + payload


def _window_update(stream: int, increment: int) -> bytes:
    return _frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def _headers_block(pairs: list[tuple[str, str]]) -> bytes:
    # Never-indexed literals (or static-table entries): no dynamic-table state on either side.
    return bytes(Encoder().encode([NeverIndexedHeaderTuple(n, v) for n, v in pairs], huffman=False))


RESPONSE_HEAD = _headers_block([(":status", "200"), ("content-type", "application/grpc")])
OK_TRAILERS = _headers_block([("grpc-status", "0")])


def _status_block(code: int, message: str) -> bytes:
    """A trailers-only answer (always under 16 KiB: the message is cut)."""
    text = quote(message[:MAX_MESSAGE_TEXT], safe=" !#$&'()*+,/:;=?@[]")
    return _headers_block(
        [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", str(code)),
            ("grpc-message", text),
        ]
    )


class _Stream:
    __slots__ = (
        "chunks", "closed", "headers", "id", "opened", "pending", "received", "size", "window"
    )  # fmt: skip

    def __init__(self, stream_id: int, window: int, opened: float) -> None:
        self.id = stream_id
        self.opened = opened  # loop time of its HEADERS: the message must follow in time
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0  # message bytes
        self.received = 0  # flow-controlled bytes not yet credited back to the connection
        self.window = window  # what the peer lets us send on this stream
        self.pending = b""  # a response's DATA waiting for window, then the trailers
        self.closed = False  # the message is complete (or refused): later frames are dropped


class GrpcProtocol(asyncio.Protocol):
    service: InferenceService  # set by protocol_for()
    limit: int
    connections: set[GrpcProtocol]
    guard: Connections

    def __init__(self) -> None:
        self.transport: Any = None
        self.loop = asyncio.get_running_loop()
        self.idle_since = self.loop.time()  # no call open and none begun since (see sweep)
        self.swept_stream = 0  # the newest stream id at the last sweep
        self.leftover = b""  # the start of a frame not yet complete
        self.preface = False
        self.decoder = Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.header_cache: dict[bytes, dict[str, str]] = {}
        self.streams: dict[int, _Stream] = {}
        self.last_stream = 0
        self.headers_for: _Stream | None = None  # a header block continued in CONTINUATION
        self.block = bytearray()
        self.end_stream_after_headers = False
        self.credit = 0  # connection window to give back
        self.credit_batch = 0
        self.send_window = DEFAULT_WINDOW
        self.peer_window = DEFAULT_WINDOW  # the peer's initial stream window
        self.peer_frame = DEFAULT_FRAME
        self.table_update = b""  # an HPACK size update our next header block must start with
        self.going_away = False
        self.refused = False  # over the connection cap: answered GOAWAY, being closed
        self.tasks: set[asyncio.Task[None]] = set()

    # -- connection -------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if not self.guard.admit(self):
            if not self.guard.linger(self):
                transport.abort()
                return
            # Refused before a call: the client may try again, on this server or another.
            why = b"too many connections"
            transport.write(
                _frame(SETTINGS, 0, 0)
                + _frame(GOAWAY, 0, 0, struct.pack(">II", 0, ENHANCE_YOUR_CALM) + why)
            )
            # Half-closed, what still comes dropped, closed on the client's EOF or in a second:
            # closing at once would reset the connection and lose the GOAWAY.
            transport.write_eof()
            self.refused = True
            self.loop.call_later(1.0, transport.close)
            return
        self.connections.add(self)
        stream_window = min(self.limit + DEFAULT_WINDOW, LARGEST_WINDOW)  # one message each
        settings = struct.pack(
            ">HIHIHI",
            3, MAX_STREAMS,
            4, stream_window,
            6, MAX_HEADER_LIST,
        )  # fmt: skip
        connection_window = min(2 * stream_window, LARGEST_WINDOW)
        self.credit_batch = connection_window // 4
        transport.write(
            _frame(SETTINGS, 0, 0, settings) + _window_update(0, connection_window - DEFAULT_WINDOW)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.guard.closed(self)
        self.streams.clear()
        for task in self.tasks:  # nobody to answer: their runs stop
            task.cancel()

    def sweep(self, now: float, timeout: float) -> None:
        """Past TIMEOUT seconds: a connection without its preface is closed; one idle (no call
        open or begun) is told to go away, as grpc's max_connection_idle does, so idle clients
        cannot fill the connection cap; a call whose message has not all come ends with
        DEADLINE_EXCEEDED. Activity is read off the newest stream id: nothing per call."""
        if self.transport.is_closing():
            return
        if self.streams or self.last_stream != self.swept_stream:
            self.swept_stream, self.idle_since = self.last_stream, now
        elif now - self.idle_since > timeout:
            if self.preface:
                self.go_away()
            else:
                self.transport.close()
            return
        out: list[bytes] = []
        for stream in list(self.streams.values()):
            if not stream.closed and now - stream.opened > timeout:
                message = f"the request did not arrive within {timeout:g} s"
                self._answer(stream, Outcome(DEADLINE_EXCEEDED, message), out)
                out.append(_frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))
        if out:
            self.transport.write(b"".join(out))

    def pause_writing(self) -> None:
        # A client that does not read its replies stops being read, rather than growing the
        # write buffer without bound (as the REST fast path does).
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def go_away(self) -> None:
        """Graceful shutdown: no new calls; the connection closes when those in flight end."""
        if self.transport is None or self.transport.is_closing() or self.going_away:
            return
        self.going_away = True
        self.transport.write(_frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, NO_ERROR)))
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.going_away and not self.streams:
            self.transport.close()

    def _fail_connection(self, error: int, why: str) -> None:
        log.info("gRPC connection closed: %s", why)
        self.transport.write(_frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, error)))
        self.transport.close()

    # -- frames in --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.leftover:  # at most one frame's worth: frames are at most MAX_FRAME
            data, self.leftover = self.leftover + data, b""
        if not self.preface:
            if len(data) < len(PREFACE):
                self.leftover = data
                return
            if not data.startswith(PREFACE):
                self.transport.close()
                return
            data, self.preface = data[len(PREFACE) :], True
        out: list[bytes] = []
        position, end = 0, len(data)
        while end - position >= 9:
            high, low, kind, flags, stream_id = FRAME_HEADER.unpack_from(data, position)
            length = high << 8 | low
            if length > MAX_FRAME:
                self._fail_connection(FRAME_SIZE_ERROR, "a frame over the size limit")
                return
            start = position + 9
            if end - start < length:
                break
            position = start + length
            frame = data[start:position]
            if not self._frame(kind, flags, stream_id & 0x7FFFFFFF, frame, out):
                return
        if position < end:
            self.leftover = data[position:]
        if self.credit >= self.credit_batch:  # given back in quarters: one frame, not one a call
            out.append(_window_update(0, self.credit))
            self.credit = 0
        if out:
            self.transport.write(b"".join(out))

    def _frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, out: list[bytes]
    ) -> bool:
        """Handle one frame; False when the connection had to be closed."""
        if self.headers_for is not None and kind != CONTINUATION:
            self._fail_connection(PROTOCOL_ERROR, "a header block was interrupted")
            return False
        if kind == DATA:
            stream = self.streams.get(stream_id)
            if stream is None or stream.closed:
                self.credit += len(payload)  # dropped at once
            else:
                stream.received += len(payload)
                self._data(stream, _unpadded(flags, payload), flags & END_STREAM, out)
        elif kind in (HEADERS, CONTINUATION):
            return self._headers(kind, flags, stream_id, payload, out)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload, out)
                out.append(_frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if not flags & ACK:
                out.append(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload, out)
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._credit(stream)
            self._close_if_idle()
        elif kind == GOAWAY:
            self.going_away = True
            self._close_if_idle()
        return True

    def _settings(self, payload: bytes, out: list[bytes]) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == 1:  # HEADER_TABLE_SIZE: we use none of it, and say so (size 0)
                self.table_update = b"\x20"
            elif key == 4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                for stream in self.streams.values():
                    stream.window += value - self.peer_window
                self.peer_window = value
            elif key == 5:
                self.peer_frame = min(max(value, DEFAULT_FRAME), (1 << 24) - 1)
        self._flush_all(out)

    def _window_update(self, stream_id: int, payload: bytes, out: list[bytes]) -> None:
        increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if stream_id == 0:
            self.send_window += increment
            self._flush_all(out)
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.window += increment
            if stream.pending:
                self._flush(stream, out)

    def _headers(
        self, kind: int, flags: int, stream_id: int, payload: bytes, out: list[bytes]
    ) -> bool:
        if kind == HEADERS:
            payload = _unpadded(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            stream = self.streams.get(stream_id)
            if stream is None:
                if stream_id <= self.last_stream or stream_id % 2 == 0:
                    self._fail_connection(PROTOCOL_ERROR, "a stream id out of order")
                    return False
                self.last_stream = stream_id
                stream = _Stream(stream_id, self.peer_window, self.loop.time())
                if self.going_away or len(self.streams) >= MAX_STREAMS:
                    # After our GOAWAY, or over the limit we announced: the client may retry.
                    out.append(_frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
                    stream.closed = True
                else:
                    self.streams[stream_id] = stream
            self.headers_for, self.end_stream_after_headers = stream, bool(flags & END_STREAM)
            self.block = bytearray()
        elif self.headers_for is None or self.headers_for.id != stream_id:
            self._fail_connection(PROTOCOL_ERROR, "a CONTINUATION frame out of place")
            return False
        self.block += payload
        if len(self.block) > MAX_HEADER_LIST:
            self._fail_connection(ENHANCE_YOUR_CALM, "a header block over the size limit")
            return False
        if not flags & END_HEADERS:
            return True
        stream, self.headers_for = self.headers_for, None
        try:  # every block is decoded, to keep HPACK's table in step with the peer's
            headers = self._decode(bytes(self.block))
        except HPACKError:
            self._fail_connection(COMPRESSION_ERROR, "a header block that does not decode")
            return False
        if not stream.headers:
            stream.headers = headers
        if self.end_stream_after_headers and not stream.closed:
            self._message_complete(stream, out)
        return True

    def _decode(self, block: bytes) -> dict[str, str]:
        """A header block's fields. A client sends the same block call after call; decoding
        HPACK in Python costs about as much as the inference, so a block that left the decoder's
        table as it was (entries and size) is remembered, and all are forgotten once any block
        changes the table, as a remembered block may point into it."""
        cached = self.header_cache.get(block)
        if cached is not None:
            return cached
        table = self.decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        fields = self.decoder.decode(block, raw=True)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in fields}
        after = (len(entries), entries[0] if entries else None, table.maxsize)
        if after[0] == before[0] and after[1] is before[1] and after[2] == before[2]:
            if len(self.header_cache) < HEADER_CACHE:
                self.header_cache[block] = headers
        else:
            self.header_cache.clear()
        return headers

    def _data(self, stream: _Stream, data: bytes, end: int, out: list[bytes]) -> None:
        stream.size += len(data)
        if stream.size > self.limit + 5:
            message = f"the message is over the {self.limit}-byte limit"
            self._answer(stream, Outcome(RESOURCE_EXHAUSTED, message), out)
            out.append(_frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))
            return
        stream.chunks.append(data)
        if end:
            self._message_complete(stream, out)

    # -- calls ------------------------------------------------------------------------------

    def _message_complete(self, stream: _Stream, out: list[bytes]) -> None:
        stream.closed = True  # half-closed (remote): nothing more is read for it
        self._credit(stream)
        body = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
        stream.chunks = []
        if body[:1] not in (b"", b"\0"):  # compressed: inflated on a thread (zlib frees the GIL)
            self._later(stream, self._inflated_call(stream, body))
            return
        message = self._message(stream, body)
        if isinstance(message, Outcome):
            self._answer(stream, message, out)
            return
        headers = stream.headers
        outcome = self.service.call(headers.get(":path", ""), message, headers)
        if isinstance(outcome, Outcome):
            self._answer(stream, outcome, out)
            return
        self._later(stream, outcome)

    def _later(self, stream: _Stream, outcome: Awaitable[Outcome]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer_later(stream, outcome))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _inflated_call(self, stream: _Stream, body: bytes) -> Outcome:
        message = await asyncio.to_thread(self._message, stream, body)
        if isinstance(message, Outcome):
            return message
        outcome = self.service.call(stream.headers.get(":path", ""), message, stream.headers)
        return outcome if isinstance(outcome, Outcome) else await outcome

    def _credit(self, stream: _Stream) -> None:
        """Give the connection window back for what STREAM sent: its message was taken."""
        self.credit += stream.received
        stream.received = 0

    def _message(self, stream: _Stream, body: bytes) -> bytes | Outcome:
        """The one message of a unary call, decompressed if it came compressed."""
        if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            return Outcome(INVALID_ARGUMENT, "a unary call carries exactly one message")
        if not body[0]:
            return body[5:]
        encoding = stream.headers.get("grpc-encoding", "identity")
        if encoding != "gzip":
            return Outcome(UNIMPLEMENTED, f"compressed messages ({encoding}) are not supported")
        try:
            return inflate(body[5:], "gzip", self.limit, "message")
        except MserveError as exc:
            return failure(exc, "")

    async def _answer_later(self, stream: _Stream, outcome: Awaitable[Outcome]) -> None:
        try:
            done = await outcome
        except Exception as exc:  # the service answers every error itself; this is a bug
            log.error("internal error in a gRPC call", exc_info=exc)
            done = Outcome(INTERNAL, "internal server error")
        out: list[bytes] = []
        if self.streams.get(stream.id) is stream and not self.transport.is_closing():
            self._answer(stream, done, out)
            self.transport.write(b"".join(out))
        else:
            self._finished(stream)

    def _answer(self, stream: _Stream, outcome: Outcome, out: list[bytes]) -> None:
        stream.closed = True
        prefix, self.table_update = self.table_update, b""
        if outcome.code:
            block = prefix + _status_block(outcome.code, outcome.message)
            out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
            self._finished(stream)
            return
        payload = outcome.payload
        size = len(payload) + 5  # gRPC's frame: a compressed flag and a 4-byte length
        out.append(_frame(HEADERS, END_HEADERS, stream.id, prefix + RESPONSE_HEAD))
        if size <= self.send_window and size <= stream.window and size <= self.peer_frame:
            self.send_window -= size
            head = FRAME_HEADER.pack(size >> 8, size & 0xFF, DATA, 0, stream.id)
            out += (head, b"\0", (size - 5).to_bytes(4, "big"), payload)
            out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, OK_TRAILERS))
            self._finished(stream)
            return
        stream.pending = b"\0" + (size - 5).to_bytes(4, "big") + payload
        self._flush(stream, out)

    def _flush_all(self, out: list[bytes]) -> None:
        for stream in list(self.streams.values()):
            if stream.pending:
                self._flush(stream, out)

    def _flush(self, stream: _Stream, out: list[bytes]) -> None:
        """Send what the peer's windows allow of a large response; the trailers once done."""
        while stream.pending:
            size = min(len(stream.pending), self.send_window, stream.window, self.peer_frame)
            if size <= 0:
                return  # wait for WINDOW_UPDATE
            chunk, stream.pending = stream.pending[:size], stream.pending[size:]
            self.send_window -= size
            stream.window -= size
            out.append(_frame(DATA, 0, stream.id, chunk))
        prefix, self.table_update = self.table_update, b""
        out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, prefix + OK_TRAILERS))
        self._finished(stream)

    def _finished(self, stream: _Stream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        if self.going_away and not self.streams:
            asyncio.get_running_loop().call_soon(self._close_if_idle)


def _unpadded(flags: int, payload: bytes) -> bytes:
    if flags & PADDED and payload:
        return payload[1 : len(payload) - payload[0]]
    return payload


def protocol_for(service: InferenceService, limit: int, guard: Connections) -> type[GrpcProtocol]:
    """The protocol class the event loop instantiates per connection, bound to SERVICE."""
    attributes = {"service": service, "limit": limit, "connections": set(), "guard": guard}
    return type("MserveGrpcProtocol", (GrpcProtocol,), attributes)
