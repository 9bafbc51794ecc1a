"""The in-process tier: the whole server (data plane, admin, REST app) built as `mserve serve`
builds it, driven through httpx's ASGI transport: no socket, no subprocess."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from mserve.server.run import Server, build
from mserve.server.settings import ServerSettings


class InProcess:
    def __init__(self, repo: Path, **settings: Any) -> None:
        self.server: Server = build(ServerSettings(repo, access_log=False, grpc_port=0, **settings))
        self.server.plane.manager.refresh()
        self.server.plane.started = True

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.server.rest)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as client:
                return await client.request(method, path, **options)

        return asyncio.run(run())


@pytest.fixture(scope="module")
def inprocess(served_repo: Path) -> InProcess:
    """iris:1 and churn:1 (the `server` fixture's repository), served in process."""
    return InProcess(served_repo)
