"""The floor of any Python HTTP server on this machine: the bare app's work (orjson, numpy,
onnxruntime) on a raw uvloop protocol with httptools, no ASGI and no features. ``/`` answers a
constant (the load generator's ceiling); ``/infer`` runs the model at MODEL_PATH on a V2 JSON
body with one input. Keep-alive only: no pipelining, no limits, no errors handled.

    MODEL_PATH=model.onnx python raw_app.py PORT
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import httptools
import numpy as np
import onnxruntime as ort
import orjson
import uvloop

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
)
input_name = session.get_inputs()[0].name
output_names = [o.name for o in session.get_outputs()]


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
        if self.url == b"/infer":
            tensor = orjson.loads(b"".join(self.body))["inputs"][0]
            data = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            results = session.run(None, {input_name: data})
            reply = orjson.dumps(
                {
                    "outputs": [
                        {"name": n, "data": r.ravel()}
                        for n, r in zip(output_names, results, strict=True)
                    ]
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        else:
            reply = b"{}"
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
