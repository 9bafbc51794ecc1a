"""The access log: one JSON line per HTTP request on stderr.

Each line is formatted at once, but written with the others of the same event-loop turn in
one ``write`` call scheduled right after that turn: under load that is one system call for
dozens of requests rather than two each (a write and a flush cost more than the line). The
buffer is written at shutdown and at interpreter exit, and at most one turn's lines are pending
at any moment.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import time
from typing import BinaryIO

import orjson


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.pending: list[bytes] = []
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
            b',"model":%s,"version":"%s"' % (orjson.dumps(model), version.encode())
            if model
            else b""
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
        if not self.pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a test calling the app directly): write at once
                self.stream.write(line)
                self.stream.flush()
                return
        self.pending.append(line)

    def flush(self) -> None:
        if not self.pending:
            return
        lines, self.pending = self.pending, []
        try:
            self.stream.write(b"".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing left to tell
            pass

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)
