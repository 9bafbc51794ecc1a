"""Every open connection of both transports, so one client cannot take the server's file
descriptors or hold them with requests it never finishes.

- A cap on open connections (HTTP and gRPC together). One over it is answered at once (HTTP:
  503; gRPC: GOAWAY) and closed as soon as the client has its answer, within a second; at
  most ``LINGERING`` refused ones wait so at a time, the rest are closed without an answer, so
  a flood holds no more descriptors than the cap and that.
- A read deadline: a request (headers and body) must arrive whole within ``read_timeout_s`` of
  its first byte, or of the connection's start for the first. A sweep every second finds the
  late ones (HTTP: 408 and close; gRPC: the call ends with DEADLINE_EXCEEDED). One sweep
  instead of a timer per request keeps the fast path's per-request cost to a timestamp.
- Idle keep-alive connections are uvicorn's to close (its keep-alive timeout).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Protocol

log = logging.getLogger("mserve.server")
SWEEP_SECONDS = 1.0
RESERVED_FILES = 128  # descriptors kept for models, logs, threads and the repository
LINGERING = 64  # refused connections kept open at once for their answer to arrive
MOST_CONNECTIONS = 10_000  # the default cap, where the file limit allows more


class Guarded(Protocol):
    def sweep(self, now: float, timeout: float) -> None:
        """Answer and end whatever has been arriving for longer than TIMEOUT seconds."""


class Connections:
    def __init__(self, cap: int, read_timeout_s: float) -> None:
        self.cap = cap
        self.read_timeout_s = read_timeout_s
        self.open: set[Guarded] = set()
        self.lingering: set[Guarded] = set()  # refused, half-closed, until the client's EOF
        self.refused = 0  # connections over the cap, for the log
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self, connection: Guarded) -> bool:
        """Count CONNECTION in; False (and not counted) when the cap is reached."""
        if len(self.open) >= self.cap:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("%d connection(s) refused: %d are open", self.refused, self.cap)
            return False
        self.open.add(connection)
        if self._sweeper is None:
            self._schedule()
        return True

    def linger(self, connection: Guarded) -> bool:
        """Whether refused CONNECTION may stay open for its answer to arrive (else it is
        closed at once)."""
        if len(self.lingering) >= LINGERING:
            return False
        self.lingering.add(connection)
        return True

    def closed(self, connection: Guarded) -> None:
        self.open.discard(connection)
        self.lingering.discard(connection)

    def _schedule(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        try:
            for connection in list(self.open):
                connection.sweep(now, self.read_timeout_s)
        finally:  # a fault in one connection's sweep never stops the sweeping
            self._sweeper = None
            if self.open:
                self._schedule()


def default_cap() -> int:
    """MOST_CONNECTIONS, or fewer when the process may not open that many files (less a
    reserve), after raising the soft file limit to the hard one, as servers do: the soft
    default is often 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(min(soft - RESERVED_FILES, MOST_CONNECTIONS), 16)
