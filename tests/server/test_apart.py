"""Large JSON requests are decoded, and answered, in codec processes (mserve/server/apart.py):
the same answers and the same errors as requests handled in the server, a job past the timeout
stopped, and a codec process that died replaced."""

from __future__ import annotations

import array
import concurrent.futures
import fcntl
import gzip
import os
import re
import signal
import termios
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from mserve.server.apart import APART_BYTES
from tests.conftest import Server, wait_until

FIRST = re.compile(rb'"data":\[([^,]+),')  # a tensor's first value
ROWS = 20_000  # iris rows: about 1.4 MB of V2 JSON


def codec_processes(server: Server) -> list[int]:
    """The server's codec processes (its children running mserve.server.apart)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"mserve.server.apart" in command:
            found.append(int(entry))
    return found


def v2_json(x: np.ndarray) -> bytes:
    tensor = {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return orjson.dumps({"inputs": [tensor]})


def v2_outputs(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


@pytest.fixture(scope="module")
def iris_x(iris_data: Any) -> np.ndarray:
    x = iris_data[0].astype(np.float32)
    return np.resize(x, (ROWS, x.shape[1]))


def test_large_json_bodies_are_answered_as_small_ones_are(
    server: Server, iris_x: np.ndarray
) -> None:
    body = v2_json(iris_x)
    assert len(body) > APART_BYTES
    url = f"{server.url}/v2/models/iris/infer"
    whole = v2_outputs(httpx.post(url, content=body, timeout=60))
    assert codec_processes(server), "the large body went to a codec process"
    step = ROWS // 8  # each part's body is under APART_BYTES: decoded in the server
    parts = [v2_outputs(httpx.post(url, content=v2_json(iris_x[i : i + step]))) for i in (0, step)]
    for name, values in whole.items():  # the same, up to float rounding of another batch size
        together = parts[0][name] + parts[1][name]
        np.testing.assert_allclose(values[: len(together)], together, rtol=1e-6)

    # TF Serving, both forms, and a compressed V2 body
    rows = iris_x.tolist()
    tf = f"{server.url}/v1/models/iris:predict"
    by_rows = httpx.post(tf, content=orjson.dumps({"instances": rows}), timeout=60).json()
    columnar = httpx.post(tf, content=orjson.dumps({"inputs": rows}), timeout=60).json()
    assert len(by_rows["predictions"]) == ROWS
    assert columnar["outputs"]["label"] == [row["label"] for row in by_rows["predictions"]]
    rows_part = orjson.dumps({"instances": rows[: 2 * step]})
    part = httpx.post(tf, content=rows_part).json()["predictions"]
    assert [p["label"] for p in part] == [p["label"] for p in by_rows["predictions"][: 2 * step]]
    np.testing.assert_allclose(
        [p["probabilities"] for p in part],
        [p["probabilities"] for p in by_rows["predictions"][: 2 * step]],
        rtol=1e-6,
    )
    examples = orjson.dumps({"examples": [{"X": row} for row in rows]})
    classified = httpx.post(f"{server.url}/v1/models/iris:classify", content=examples, timeout=60)
    assert classified.status_code == 200, classified.text
    scores = [[score for _, score in pairs] for pairs in classified.json()["result"]]
    np.testing.assert_allclose(
        scores, [p["probabilities"] for p in by_rows["predictions"]], rtol=1e-6
    )


def test_a_compressed_body_goes_apart_only_when_it_inflates_large(
    served_repo: Path, iris_x: np.ndarray
) -> None:
    server = Server(served_repo)
    try:
        url = f"{server.url}/v2/models/iris/infer"
        gzipped = {"Content-Encoding": "gzip"}
        small = httpx.post(url, content=gzip.compress(v2_json(iris_x[:3])), headers=gzipped)
        assert v2_outputs(small)["label"] == [0, 0, 0]
        assert not codec_processes(server), "a small body is decoded in the server"
        body = v2_json(iris_x)
        large = httpx.post(url, content=gzip.compress(body), headers=gzipped, timeout=60)
        assert v2_outputs(large) == v2_outputs(httpx.post(url, content=body, timeout=60))
        assert codec_processes(server)
    finally:
        assert server.stop() == 0


def test_large_string_inputs_come_back_whole(server: Server) -> None:
    rows = 10_000
    columns = {
        "tenure_months": ("FP32", [[3 + i % 50] for i in range(rows)]),
        "monthly_charge": ("FP32", [[20.5 + i % 7] for i in range(rows)]),
        "contract": ("BYTES", [[["month", "year", "two_year"][i % 3]] for i in range(rows)]),
        "region": ("BYTES", [[["north", "süd", "東"][i % 3]] for i in range(rows)]),
    }

    def body(start: int, stop: int) -> bytes:
        inputs = [
            {"name": n, "datatype": t, "shape": [stop - start, 1], "data": v[start:stop]}
            for n, (t, v) in columns.items()
        ]
        return orjson.dumps({"inputs": inputs})

    assert len(body(0, rows)) > APART_BYTES
    url = f"{server.url}/v2/models/churn/infer"
    whole = v2_outputs(httpx.post(url, content=body(0, rows), timeout=60))
    first = v2_outputs(httpx.post(url, content=body(0, 100)))
    for name, values in first.items():
        assert whole[name][: len(values)] == values


@pytest.mark.parametrize(
    ("mutate", "status", "fragment"),
    [
        (lambda b: b.replace(b'"shape":[20000,4]', b'"shape":[20000,5]'), 400, "values for shape"),
        (lambda b: b[:-2], 400, "malformed JSON"),
        (lambda b: FIRST.sub(rb'"data":["\1",', b, 1), 400, "got strings"),
        (lambda b: FIRST.sub(rb'"data":[1e39,', b, 1), 400, "out of range for float32"),
        (lambda b: b.replace(b'"X"', b'"Y"'), 400, "unknown input 'Y'"),
    ],
)
def test_large_bad_bodies_get_the_same_400(
    server: Server, iris_x: np.ndarray, mutate: Any, status: int, fragment: str
) -> None:
    body = mutate(v2_json(iris_x))
    response = httpx.post(f"{server.url}/v2/models/iris/infer", content=body, timeout=60)
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_a_compressed_body_over_the_limit_gets_413(server: Server) -> None:
    bomb = gzip.compress(b"[" + b"0," * (40 * 1024 * 1024) + b"0]")
    response = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        content=bomb,
        headers={"Content-Encoding": "gzip"},
        timeout=60,
    )
    assert response.status_code == 413
    assert "over the" in response.json()["error"]


def test_a_job_past_the_timeout_is_stopped_and_a_dead_codec_process_replaced(
    served_repo: Path, iris_x: np.ndarray
) -> None:
    server = Server(served_repo, "--timeout", "1")
    try:
        url = f"{server.url}/v2/models/iris/infer"
        body = v2_json(iris_x[:5000])
        assert len(body) > APART_BYTES
        assert httpx.post(url, content=body, timeout=60).status_code == 200
        (codec,) = codec_processes(server)

        os.kill(codec, signal.SIGSTOP)  # a decode that takes for ever
        response = httpx.post(url, content=body, timeout=60)
        assert response.status_code == 504
        assert wait_until(lambda: not codec_processes(server), timeout=5), "the decode was stopped"
        assert httpx.post(url, content=body, timeout=60).status_code == 200
        (codec,) = codec_processes(server)

        os.kill(codec, signal.SIGKILL)  # one that dies idle is replaced
        assert wait_until(lambda: not codec_processes(server), timeout=5)
        assert httpx.post(url, content=body, timeout=60).status_code == 200
        (codec,) = codec_processes(server)

        os.kill(codec, signal.SIGSTOP)  # one that dies at work fails its request only
        with httpx.Client(timeout=60) as client:
            pending = concurrent.futures.ThreadPoolExecutor(1).submit(
                client.post, url, content=body
            )
            assert wait_until(lambda: _waits_on_pipe(codec), timeout=5)
            os.kill(codec, signal.SIGKILL)
            failed = pending.result()
        assert failed.status_code == 500
        assert failed.json() == {"error": "handling the request's JSON failed"}
        assert httpx.post(url, content=body, timeout=60).status_code == 200
    finally:
        assert server.stop() == 0
    log = server.stderr()
    assert "Traceback" not in log
    assert log.count("a codec process ended (exit code -9)") == 1


def _waits_on_pipe(pid: int) -> bool:
    """Whether bytes wait in the standard input (a pipe) of process PID."""
    try:
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        pending = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, pending)
        return pending[0] > 0
    finally:
        os.close(fd)
