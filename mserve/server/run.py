"""Running the server: uvicorn (httptools, uvloop) around the ASGI app, with a graceful SIGTERM.

On SIGTERM or SIGINT readiness turns 503 at once (so a load balancer stops sending), uvicorn
stops accepting connections, requests in flight finish, and the process exits 0 once they have
or when the grace period ends.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from .app import create_app
from .http import protocol_for
from .settings import ServerSettings


def serve(settings: ServerSettings) -> None:
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_for(app),  # httptools, with a direct path for inference
        lifespan="on",
        access_log=False,  # the app writes its own structured access log
        proxy_headers=False,  # a middleware per request, for X-Forwarded-* mserve does not use
        log_level="warning",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.draining = True
            super().handle_exit(sig, frame)

    logging.getLogger("mserve.server").info(
        "serving %s on http://%s:%d", settings.repository, settings.host, settings.port
    )
    # uvicorn re-raises the signal it caught to the previous handler once it has drained; the
    # drain is the whole answer to SIGTERM here, so the process then exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    Server(config).run()
