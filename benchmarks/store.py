"""A repository on S3 (moto's S3 API on loopback) against one in a folder: publish time, and
what one poll of a server costs.

    python benchmarks/store.py [--runs 5]

Publish: ``mserve.export`` of an ONNX file (the iris classifier, no conversion) into a folder,
then into ``s3://``, alternating, RUNS times each; the median of each and their ratio. The S3
figure is dominated by round trips (loopback here; a real region adds its latency to each).

Poll: 10 models of 5 versions each on S3; a server's mirror (``mserve/server/mirror.py``,
latest:1) copies what it serves, then polls: a cheap poll with nothing changed, one after a
new version, and a full one (every model listed; every 30th poll). Counted: the HTTP requests
sent and the bytes received, through botocore's own events.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import start

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import ENV, SAMPLES, free_port  # noqa: E402 (the tests' own S3 set-up)

MODELS, VERSIONS = 10, 5


def s3() -> tuple[Any, str]:
    import logging
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({**ENV, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"})
    boto3.client("s3").create_bucket(Bucket="bench")
    return server, "s3://bench"


def publish(runs: int, base: str) -> None:
    import mserve

    source = SAMPLES / "iris_classifier.onnx"
    times: dict[str, list[float]] = {"folder": [], "s3": []}
    folder = Path(tempfile.mkdtemp(prefix="mserve-bench-")) / "models"
    mserve.export(source, name="warm", repo=folder)  # imports and first-call costs, once
    for _ in range(runs):
        for kind, repo in (("folder", str(folder)), ("s3", f"{base}/publish")):
            began = time.perf_counter()
            mserve.export(source, name="iris", repo=repo)
            times[kind].append(time.perf_counter() - began)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    for kind, value in medians.items():
        print(f"publish to a {kind:6}: median {value * 1000:7.1f} ms over {runs}")
    print(f"publish s3/folder: {medians['s3'] / medians['folder']:.2f}x")


class Counter:
    """HTTP requests sent and bytes received by one botocore client."""

    def __init__(self, client: Any) -> None:
        self.requests = self.received = 0
        client.meta.events.register("before-send.s3", self.sent)
        client.meta.events.register("after-call.s3", self.answered)

    def sent(self, **_: Any) -> None:
        self.requests += 1

    def answered(self, http_response: Any = None, **_: Any) -> None:
        if http_response is not None:
            self.received += int(http_response.headers.get("content-length", 0))

    def take(self) -> tuple[int, int]:
        taken, self.requests, self.received = (self.requests, self.received), 0, 0
        return taken


def poll(base: str) -> None:
    import mserve
    from mserve.server.mirror import Mirror
    from mserve.server.settings import VersionPolicy
    from mserve.stores import StoreRepository

    location = f"{base}/fleet"
    source = SAMPLES / "iris_classifier.onnx"
    for model in range(MODELS):
        for _ in range(VERSIONS):
            mserve.export(source, name=f"m{model}", repo=location)
    repository = StoreRepository(location)
    fs = repository.store.fs
    fs.connect()
    counter = Counter(fs.s3)
    mirror = Mirror(repository, Path(tempfile.mkdtemp(prefix="mserve-cache-")), VersionPolicy())
    rows = [("first poll (copies what is served)", True)]
    rows += [("cheap poll, nothing changed", False), ("cheap poll, after a new version", False)]
    rows += [("full poll (every 30th)", True)]
    for name, full in rows:
        if "new version" in name:
            mserve.export(source, name="m3", repo=location)
            counter.take()
        began = time.perf_counter()
        mirror.sync(full=full)
        seconds = time.perf_counter() - began
        requests, received = counter.take()
        print(f"{name:38} {requests:4} requests {received:9,} bytes  {seconds * 1000:7.1f} ms")


def main() -> None:
    args = start(__doc__ or "", runs=5)
    server, base = s3()
    try:
        publish(args.runs, base)
        print(f"\n{MODELS} models x {VERSIONS} versions on S3, a server's mirror (latest:1):")
        poll(base)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
