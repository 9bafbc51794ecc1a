"""The access log's buffering: lines written together, none lost when a write fails."""

from __future__ import annotations

import asyncio
import io
import json
import time

from mserve.server.rest.access_log import AccessLog


class Failing(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.fail:
            raise OSError("no space left on device")
        return super().write(data)


def test_lines_of_one_moment_are_written_together() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)

    async def burst() -> bytes:
        for i in range(50):
            log.write(
                "POST", "/v2/models/m/infer", 200, b"id-%d" % i, time.perf_counter(), "m", "1"
            )
        before = stream.getvalue()
        await asyncio.sleep(0.05)
        return before

    assert asyncio.run(burst()) == b""  # nothing written on the request path
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["id"] for line in lines] == [f"id-{i}" for i in range(50)]
    assert lines[0]["model"] == "m" and lines[0]["status"] == 200
    log.close()


def test_a_failed_write_keeps_its_lines() -> None:
    stream = Failing()
    log = AccessLog(stream)
    log.write("GET", '/a"b', 404, b"1", time.perf_counter())  # no loop: written at once, fails
    stream.fail = False
    log.close()
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["path"] == '/a"b' and line["status"] == 404 and "model" not in line
