"""The protocols through a real server process: KServe V2 (JSON, binary; tritonclient), TF Serving
REST, metrics, and one error shape for every bad request."""

from __future__ import annotations

import gzip
import json
import socket
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ..conftest import wait_until

pytestmark = pytest.mark.slow

ROW = [5.1, 3.5, 1.4, 0.2]
CHURN_ROW = {"tenure_months": 3.0, "monthly_charge": 80.5, "contract": "monthly", "region": "north"}


def infer_body(data: list[float] = ROW, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": data}], **extra}


def test_health_and_server_metadata(server: Any) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == "mserve"
    assert set(meta["extensions"]) == {"binary_tensor_data", "model_configuration", "statistics"}


def test_model_metadata_readiness_and_config(server: Any) -> None:
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        meta = httpx.get(server.url + path).json()
        assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
        ready = httpx.get(server.url + path + "/ready")
        assert ready.status_code == 200 and ready.json() == {"name": "iris", "ready": True}
    config = httpx.get(f"{server.url}/v2/models/iris/config").json()
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
    models = httpx.get(f"{server.url}/v2/models").json()["models"]
    assert [(m["name"], m["versions"], m["ready"]) for m in models] == [
        ("churn", ["1"], True),
        ("iris", ["1"], True),
    ]


def test_v2_json_infer_echoes_the_id_and_filters_outputs(server: Any) -> None:
    reply = httpx.post(f"{server.url}/v2/models/iris/infer", json=infer_body(id="req-7"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1", "req-7")
    label, probabilities = body["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}
    assert probabilities["shape"] == [1, 3] and abs(sum(probabilities["data"]) - 1) < 1e-5
    only = httpx.post(
        f"{server.url}/v2/models/iris/versions/1/infer",
        json=infer_body(outputs=[{"name": "probabilities"}]),
    ).json()
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]


def test_v2_binary_inputs_and_outputs_by_hand(server: Any) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 32},
                }
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        }
    ).encode()
    raw = np.array([ROW, [6.7, 3.0, 5.2, 2.3]], dtype="<f4").tobytes()
    reply = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["inference-header-content-length"])
    meta = json.loads(reply.content[:length])
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(reply.content[length:], dtype="<i8").tolist() == [0, 2]


def test_tritonclient_http_json_and_binary(server: Any) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    assert client.get_model_metadata("iris")["inputs"][0]["name"] == "X"
    data = np.array([ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    for binary in (True, False):
        tensor = triton.InferInput("X", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")
        ]
        result = client.infer("iris", [tensor], outputs=outputs)
        assert result.as_numpy("label").tolist() == [0, 2]
        assert result.as_numpy("probabilities").shape == (2, 3)
    stats = client.get_inference_statistics("iris")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 2


def test_tritonclient_bytes_tensors(server: Any) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    inputs = []
    for name, value in CHURN_ROW.items():
        text = isinstance(value, str)
        array = np.array([[value]], dtype=object if text else np.float32)
        tensor = triton.InferInput(name, [1, 1], "BYTES" if text else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("churn", inputs)
    assert result.as_numpy("label").tolist() == [1]


def test_tf_serving_status_metadata_and_predict(server: Any) -> None:
    status = httpx.get(f"{server.url}/v1/models/iris").json()
    assert status == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert httpx.get(f"{server.url}/v1/models/iris/versions/1").status_code == 200
    meta = httpx.get(f"{server.url}/v1/models/iris/metadata").json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["X"]["dtype"] == "DT_FLOAT"
    rows = httpx.post(
        f"{server.url}/v1/models/iris:predict", json={"instances": [ROW, [6.7, 3.0, 5.2, 2.3]]}
    ).json()
    assert [p["label"] for p in rows["predictions"]] == [0, 2]
    columns = httpx.post(
        f"{server.url}/v1/models/iris/versions/1:predict", json={"inputs": [ROW]}
    ).json()
    assert columns["outputs"]["label"] == [0]


def test_tf_serving_strings_and_b64(server: Any) -> None:
    row = {k: [v] for k, v in CHURN_ROW.items()}
    rows = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [row]}).json()
    assert rows["predictions"][0]["label"] == 1
    b64 = {**{k: [[v]] for k, v in CHURN_ROW.items()}, "contract": [[{"b64": "bW9udGhseQ=="}]]}
    columns = httpx.post(f"{server.url}/v1/models/churn:predict", json={"inputs": b64}).json()
    assert columns["outputs"]["label"] == [1]


def test_gzip_bodies_are_accepted(server: Any) -> None:
    reply = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        content=gzip.compress(json.dumps(infer_body()).encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "fragment"),
    [
        ("POST", "/v2/models/iris/infer", b"{not json", {}, 400, "malformed JSON"),
        ("POST", "/v2/models/iris/infer", b"[]", {}, 400, "must be a JSON object"),
        (
            "POST",
            "/v2/models/iris/infer",
            json.dumps(
                {"inputs": [{"name": "Y", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
            ).encode(),
            {},
            400,
            "unknown input 'Y'",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            json.dumps(
                {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
            ).encode(),
            {},
            400,
            "datatype FP64; the model takes FP32",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            json.dumps(
                {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": ROW}]}
            ).encode(),
            {},
            400,
            "4 values for shape [2, 4]",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            json.dumps(
                {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": ROW[:3]}]}
            ).encode(),
            {},
            400,
            "dimension 1 must be 4",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            json.dumps(infer_body(outputs=[{"name": "nope"}])).encode(),
            {},
            400,
            "unknown output 'nope'",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            b"{}",
            {"Inference-Header-Content-Length": "99"},
            400,
            "larger than the body",
        ),
        (
            "POST",
            "/v2/models/iris/infer",
            b"{}",
            {"Content-Encoding": "gzip"},
            400,
            "not valid gzip",
        ),
        ("POST", "/v2/models/iris/infer", b"[" * 5000 + b"]" * 5000, {}, 400, "malformed JSON"),
        ("POST", "/v2/models/nope/infer", b"{}", {}, 404, "model 'nope' not found"),
        ("POST", "/v2/models/iris/versions/9/infer", b"{}", {}, 404, "no version 9"),
        ("POST", "/v2/models/iris/versions/01/infer", b"{}", {}, 400, "invalid version"),
        ("GET", "/v2/models/iris/infer", b"", {}, 405, "use POST"),
        ("GET", "/v2/models/../../etc/passwd", b"", {}, 404, "no route for /etc/passwd"),
        ("GET", "/v2/models/%2e%2e/config", b"", {}, 404, "model '..' not found"),
        ("GET", "/v2/models/Iris%2Fx", b"", {}, 404, "not found"),
        ("GET", "/nope", b"", {}, 404, "no route"),
        ("POST", "/v1/models/iris:predict", b'{"instances": []}', {}, 400, "non-empty list"),
        (
            "POST",
            "/v1/models/iris:predict",
            b'{"instances": [[1, 2]]}',
            {},
            400,
            "dimension 1 must be 4",
        ),
        (
            "POST",
            "/v1/models/iris:predict",
            json.dumps({"instances": [ROW], "inputs": [ROW]}).encode(),
            {},
            400,
            "exactly one of",
        ),
        (
            "POST",
            "/v1/models/iris:predict",
            json.dumps({"signature_name": "x", "instances": [ROW]}).encode(),
            {},
            400,
            "unknown signature_name",
        ),
        (
            "POST",
            "/v1/models/churn:predict",
            json.dumps({"instances": [{**CHURN_ROW, "contract": {"b64": "!!"}}]}).encode(),
            {},
            400,
            "invalid base64",
        ),
        ("POST", "/v1/models/iris:classify", b"{}", {}, 400, "'examples' must be"),
        ("POST", "/v1/models/iris:explain", b"{}", {}, 404, "no route"),
        ("GET", "/v1/models/iris/labels/stable", b"", {}, 404, "no label 'stable'"),
    ],
)
def test_every_bad_request_gets_one_json_error(
    inprocess: Any, method: str, path: str, body: bytes, headers: dict, status: int, fragment: str
) -> None:
    reply = inprocess.request(method, path, content=body, headers=headers)
    assert reply.status_code == status, reply.text
    data = reply.json()
    assert list(data) == ["error"] and fragment in data["error"], data
    assert "Traceback" not in reply.text and "/tmp" not in reply.text


def test_metrics_with_model_and_version_labels(server: Any) -> None:
    httpx.post(f"{server.url}/v2/models/iris/infer", json=infer_body())
    httpx.post(f"{server.url}/v2/models/iris/infer", content=b"{bad")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'mserve_requests_total{model="iris",outcome="ok",protocol="v2",version="1"}' in text
    assert 'mserve_requests_total{model="iris",outcome="400",protocol="v2",version="1"}' in text
    assert (
        'mserve_request_duration_seconds_bucket{le="0.005",model="iris",protocol="v2",version="1"}'
        in text
    )
    assert 'mserve_inference_duration_seconds_count{model="iris",version="1"}' in text
    assert 'mserve_model_version_state{model="iris",state="AVAILABLE",version="1"} 1.0' in text
    assert 'mserve_model_load_seconds{model="iris",version="1"}' in text
    # what autoscalers read: the queues above, and the process
    process = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("process_")
    }
    assert process["process_resident_memory_bytes"] > 10e6
    assert process["process_cpu_seconds_total"] > 0
    assert 10 < process["process_open_fds"] < process["process_max_fds"]
    alias = httpx.get(f"{server.url}/monitoring/prometheus/metrics")
    assert alias.status_code == 200 and "mserve_requests_total" in alias.text


def test_a_structured_access_log_line_per_request(server: Any) -> None:
    httpx.post(
        f"{server.url}/v2/models/iris/infer",
        json=infer_body(),
        headers={"x-request-id": "trace-42"},
    )

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]

    assert wait_until(lambda: any(line["id"] == "trace-42" for line in lines()))
    entry = next(line for line in lines() if line["id"] == "trace-42")
    assert entry["model"] == "iris" and entry["version"] == "1" and entry["status"] == 200
    assert entry["method"] == "POST" and entry["ms"] > 0


def test_binary_strings_pack_with_length_prefixes(server: Any) -> None:
    parts = []
    for name, value in CHURN_ROW.items():
        if isinstance(value, str):
            raw = struct.pack("<I", len(value)) + value.encode()
            parts.append(
                (
                    {
                        "name": name,
                        "shape": [1, 1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(raw)},
                    },
                    raw,
                )
            )
        else:
            parts.append(
                ({"name": name, "shape": [1, 1], "datatype": "FP32", "data": [value]}, b"")
            )
    header = json.dumps({"inputs": [p[0] for p in parts]}).encode()
    reply = httpx.post(
        f"{server.url}/v2/models/churn/infer",
        content=header + b"".join(p[1] for p in parts),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == [1]


def test_no_access_log_line_is_lost_at_shutdown(served_repo: Path) -> None:
    """Lines are written once per event-loop turn: a burst of pipelined requests, answered in a
    few turns, and a SIGTERM right after it still leave one line each."""
    from ..conftest import Server

    server = Server(served_repo)
    body = json.dumps(infer_body()).encode()
    request = (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"".join(request + b"X-Request-Id: burst-%d\r\n\r\n" % i + body for i in range(200))
        )
        received = b""
        while received.count(b"HTTP/1.1 200") < 200:
            chunk = sock.recv(65536)
            assert chunk, received[-300:]  # closed before every answer came
            received += chunk
    assert server.stop() == 0
    ids = {json.loads(line)["id"] for line in server.stderr().splitlines() if line.startswith("{")}
    assert {f"burst-{i}" for i in range(200)} <= ids
