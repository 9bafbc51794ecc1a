"""The access log: one JSON line per HTTP request on stderr.

Each line is formatted at once (under a microsecond) but written with the others of the same
``FLUSH_S`` in one ``write`` call: under load that is one system call for a hundred requests
rather than a write and a flush each, which cost more than the line. The buffer is written at
shutdown and at interpreter exit; a write that fails keeps its lines for the next one (up to
``MAX_PENDING``, then the oldest go, and the next line written says how many).
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import time
from typing import BinaryIO

import orjson

FLUSH_S = 0.01
MAX_PENDING = 100_000


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.pending: list[bytes] = []
        self.scheduled = False
        self.dropped = 0
        atexit.register(self.flush)

    def write(  # noqa: PLR0917 (called once per request: positional is cheaper)
        self,
        method: str,
        path: str,
        status: int,
        request_id: bytes,
        started: float,
        model: str = "",
        version: str = "",
    ) -> None:
        served = (
            b',"model":"%s","version":"%s"' % (model.encode(), version.encode()) if model else b""
        )
        line = b'{"ts":%.3f,"id":%s,"method":"%s","path":%s,"status":%d,"ms":%.3f%s}\n' % (
            time.time(),
            orjson.dumps(request_id.decode("latin-1")),
            method.encode(),
            orjson.dumps(path),
            status,
            (time.perf_counter() - started) * 1000,
            served,
        )
        self.pending.append(line)
        if not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no loop (a test calling the app directly): write at once
                self.flush()
                return
            self.scheduled = True

    def flush(self) -> None:
        self.scheduled = False
        if not self.pending:
            return
        lines = self.pending
        if self.dropped:
            lines.append(b'{"dropped_access_log_lines":%d}\n' % self.dropped)
        try:
            self.stream.write(b"".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # stderr full, closed or gone: keep the lines for later
            if self.dropped:
                lines.pop()
            overflow = len(lines) - MAX_PENDING
            if overflow > 0:
                del lines[:overflow]
                self.dropped += overflow
            return
        self.pending, self.dropped = [], 0

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)
