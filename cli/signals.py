"""How an ``mserve`` process answers SIGINT (Ctrl-C) and SIGTERM.

Installed first thing, before the command line is imported; this module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

RESIGNAL_S = 0.05


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C raises KeyboardInterrupt; SIGTERM raises SystemExit, which unwinds ``finally``
    blocks too, so a stopped export cleans its staging directory.

    Not inside an import: an exception there leaves a module half initialised (numpy then fails
    later, as an "internal error") or aborts a native library's initialiser; the signal is sent
    again a moment later instead, when the import is over.
    """
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            later = threading.Timer(RESIGNAL_S, os.kill, (os.getpid(), signum))
            later.daemon = True
            later.start()
            return
        frame = frame.f_back
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def handled_signals() -> Iterator[None]:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        yield
    finally:
        # The command is over and has said so (a version published, a line printed): a late
        # signal would only kill the interpreter's shutdown, with no word and exit -2.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
