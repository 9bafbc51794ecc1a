"""KServe V2 gRPC with the real tritonclient: the same models, data plane and errors as REST."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture
def client(server: Any) -> Any:
    return grpcclient.InferenceServerClient(server.grpc)


def test_health_metadata_config_and_statistics(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mserve" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("iris", as_json=True)
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "4"]}]
    config = client.get_model_config("iris", as_json=True)["config"]
    assert (
        config["input"][0]["data_type"] == "TYPE_FP32" and config["platform"] == "onnxruntime_onnx"
    )
    client.infer("iris", [_rows_input()])
    stats = client.get_inference_statistics("iris", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= 1


def _rows_input() -> Any:
    tensor = grpcclient.InferInput("X", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    return tensor


def test_infer_matches_rest(client: Any, server: Any) -> None:
    outputs = [grpcclient.InferRequestedOutput("probabilities")]
    result = client.infer("iris", [_rows_input()], outputs=outputs, request_id="g-1")
    probabilities = result.as_numpy("probabilities")
    assert result.as_numpy("label") is None  # only what was asked for
    assert result.get_response().id == "g-1"
    rest = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        json={
            "inputs": [
                {"name": "X", "shape": [2, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}
            ]
        },
    ).json()
    expected = np.array(rest["outputs"][1]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    full = client.infer("iris", [_rows_input()], model_version="1")
    assert full.as_numpy("label").tolist() == [0, 2]


def test_bytes_tensors(client: Any) -> None:
    inputs = []
    for name, value in (
        ("tenure_months", 3.0),
        ("monthly_charge", 80.5),
        ("contract", "monthly"),
        ("region", "north"),
    ):
        text = isinstance(value, str)
        tensor = grpcclient.InferInput(name, [1, 1], "BYTES" if text else "FP32")
        tensor.set_data_from_numpy(np.array([[value]], dtype=object if text else np.float32))
        inputs.append(tensor)
    assert client.infer("churn", inputs).as_numpy("label").tolist() == [1]


@pytest.mark.parametrize(
    ("model", "shape", "code", "fragment"),
    [
        ("nope", [2, 4], "StatusCode.NOT_FOUND", "model 'nope' not found"),
        ("iris", [4, 2], "StatusCode.INVALID_ARGUMENT", "dimension 1 must be 4"),
    ],
)
def test_errors_map_to_grpc_status_codes(
    client: Any, model: str, shape: list[int], code: str, fragment: str
) -> None:
    tensor = grpcclient.InferInput("X", shape, "FP32")
    tensor.set_data_from_numpy(ROWS.reshape(shape))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor])
    assert caught.value.status() == code and fragment in caught.value.message()


def test_grpc_requests_are_counted_with_their_protocol(client: Any, server: Any) -> None:
    client.infer("iris", [_rows_input()])
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'mserve_requests_total{model="iris",outcome="ok",protocol="grpc",version="1"}' in metrics
