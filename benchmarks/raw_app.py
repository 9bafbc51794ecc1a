"""The floor of any Python HTTP server on this machine: the bare app's work (its ``reply_for``:
orjson, numpy, onnxruntime) on a raw uvloop protocol with httptools, with no ASGI and no
features. ``/`` answers a constant (the load generator's ceiling); ``/infer`` runs the model at
MODEL_PATH on a V2 JSON body with one input. Keep-alive only: no pipelining, no limits, no error
handling.

    MODEL_PATH=model.onnx python raw_app.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httptools
import uvloop
from bare_app import reply_for


class RawProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        reply = reply_for(self.url.decode("latin-1"), b"".join(self.body))
        self.body = []
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(reply), reply)
        )


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(RawProtocol, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
