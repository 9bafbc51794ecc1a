"""The reference point from issue 4: a bare ASGI app on uvicorn+httptools with orjson and
onnxruntime, no features at all. ``/`` answers a constant (the load generator's ceiling);
``/infer`` runs the model at MODEL_PATH on a V2 JSON body with one input.

    MODEL_PATH=model.onnx uvicorn bare_app:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
)
input_name = session.get_inputs()[0].name
output_names = [o.name for o in session.get_outputs()]


def reply_for(path: str, body: bytes) -> bytes:
    """The work of one request (shared with raw_app.py, so both do exactly the same)."""
    if path != "/infer":
        return b"{}"
    tensor = orjson.loads(body)["inputs"][0]
    data = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    results = session.run(None, {input_name: data})
    return orjson.dumps(
        {
            "outputs": [
                {"name": n, "data": r.ravel()} for n, r in zip(output_names, results, strict=True)
            ]
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    reply = reply_for(scope["path"], body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(reply)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply})
