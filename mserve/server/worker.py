"""One worker of ``mserve serve --workers N`` (workers.py), as the supervisor starts it:

python -m mserve.server.worker INDEX COUNT FOLDER HTTP_FD [GRPC_FD]   (settings on stdin)
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from .run import serve
from .workers import Siblings, decode


def main(argv: list[str]) -> None:
    index, count, folder, *fds = argv
    # A stop while the models load (before the server's own handlers are set) ends it at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = decode(sys.stdin.buffer.read())
    os.close(0)
    http = socket.socket(fileno=int(fds[0]))
    grpc = socket.socket(fileno=int(fds[1])) if len(fds) > 1 else None
    serve(settings, http=http, grpc=grpc, siblings=Siblings(int(index), Path(folder), int(count)))


if __name__ == "__main__":
    main(sys.argv[1:])
