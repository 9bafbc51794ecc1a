"""Protocol conformance, in process: the ASGI app on the data plane through httpx's ASGI
transport (no socket, no subprocess), each case in the direction the reference server takes
(Triton for V2, TF Serving for /v1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mserve
from mserve.errors import MserveError

from .conftest import InProcess

ROW = [5.1, 3.5, 1.4, 0.2]


def identity_model(path: Path, elem_type: int, output: str = "y") -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [output])],
        "identity",
        [helper.make_tensor_value_info("x", elem_type, ["batch", 1])],
        [helper.make_tensor_value_info(output, elem_type, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def plane_repo(
    tmp_path_factory: pytest.TempPathFactory,
    iris_pipeline: Any,
    iris_data: Any,
    diabetes_forest: Any,
) -> Path:
    repo = tmp_path_factory.mktemp("conformance") / "models"
    mserve.export(iris_pipeline, name="iris", repo=repo, sample=iris_data[0][::10])
    forest, x = diabetes_forest
    mserve.export(forest, name="forest", repo=repo, sample=x[:5])
    texts = identity_model(repo.parent / "texts.onnx", TensorProto.STRING, "y_bytes")
    mserve.export(texts, name="texts", repo=repo, sample={"x": np.array([["a"]], dtype=object)})
    return repo


@pytest.fixture(scope="module")
def app(plane_repo: Path) -> InProcess:
    return InProcess(plane_repo)


def test_raw_binary_request_is_the_one_input(app: InProcess) -> None:
    rows = np.array([ROW, ROW], dtype=np.float32)
    reply = app.request(
        "POST",
        "/v2/models/iris/infer",
        content=rows.tobytes(),
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs["label"]["shape"] == [2]
    odd = app.request(
        "POST",
        "/v2/models/iris/infer",
        content=rows.tobytes()[:-4],
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert odd.status_code == 400 and "cannot deduce a shape" in odd.json()["error"]


def test_request_id_is_a_string(app: InProcess) -> None:
    body = {"id": 7, "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}
    reply = app.request("POST", "/v2/models/iris/infer", json=body)
    assert reply.status_code == 400 and reply.json() == {"error": "'id' must be a string"}
    body["id"] = "seven"
    assert app.request("POST", "/v2/models/iris/infer", json=body).json()["id"] == "seven"


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [], "parameters": []},
        {"inputs": [], "outputs": "label"},
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [True, 4], "data": ROW}]},
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "parameters": 3}]},
    ],
)
def test_malformed_fields_are_400(app: InProcess, body: Any) -> None:
    reply = app.request("POST", "/v2/models/iris/infer", json=body)
    assert reply.status_code == 400, reply.text


def test_classify_answers_labels_and_scores(app: InProcess) -> None:
    reply = app.request("POST", "/v1/models/iris:classify", json={"examples": [{"X": ROW}]})
    assert reply.status_code == 200, reply.text
    (pairs,) = reply.json()["result"]
    assert [label for label, _ in pairs] == ["0", "1", "2"]
    assert abs(sum(score for _, score in pairs) - 1) < 1e-5


def test_regress_answers_one_value_per_example(app: InProcess, diabetes_forest: Any) -> None:
    forest, x = diabetes_forest
    examples = [{"X": row} for row in x[:3].tolist()]
    reply = app.request("POST", "/v1/models/forest:regress", json={"examples": examples})
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(reply.json()["result"], forest.predict(x[:3]), rtol=1e-4)
    wrong = app.request("POST", "/v1/models/forest:classify", json={"examples": examples})
    assert wrong.status_code == 400 and "needs a classifier" in wrong.json()["error"]


def test_tf_serving_nan_and_infinity_tokens(app: InProcess) -> None:
    body = b'{"instances": [[NaN, 3.5, Infinity, -Infinity]]}'
    reply = app.request("POST", "/v1/models/iris:predict", content=body)
    assert reply.status_code == 200, reply.text
    assert b"NaN" in reply.content  # not null: TF Serving writes the token
    # V2 JSON has no such tokens: malformed there, as in Triton
    v2 = b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [NaN, 1, 2, 3]}]}'
    assert app.request("POST", "/v2/models/iris/infer", content=v2).status_code == 400


def test_tf_serving_bytes_outputs_are_b64(app: InProcess) -> None:
    reply = app.request("POST", "/v1/models/texts:predict", json={"instances": [["hé"]]})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"predictions": [[{"b64": "aMOp"}]]}


def test_tf_serving_metadata_has_defaults(app: InProcess) -> None:
    meta = app.request("GET", "/v1/models/iris/metadata").json()
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["defaults"] == {}


def test_v2_bytes_round_trip_exactly(app: InProcess) -> None:
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 1], "data": ["hé"]}]}
    reply = app.request("POST", "/v2/models/texts/infer", json=body)
    assert reply.json()["outputs"][0]["data"] == ["hé"]


def test_bfloat16_models_are_refused_at_export(tmp_path: Path) -> None:
    source = identity_model(tmp_path / "bf16.onnx", TensorProto.BFLOAT16)
    with pytest.raises(MserveError, match="bfloat16"):
        mserve.export(source, name="bf", repo=tmp_path / "models")
    assert not (tmp_path / "models" / "bf").exists() or not any(
        (tmp_path / "models" / "bf").iterdir()
    )


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/models/iris:predict", b'{"instances": ' + b"[" * 200 + b"]" * 200 + b"}", "deeper"),
        ("/v1/models/texts:predict", '{"instances": [[{"b64": "é"}]]}'.encode(), "base64"),
        (
            "/v2/models/iris/infer",
            b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4],'
            b' "data": [1, 2, 3, 4]}], "outputs": [{"name": ["label"]}]}',
            "unknown output",
        ),
    ],
)
def test_malformed_values_are_400_not_500(
    app: InProcess, path: str, body: bytes, fragment: str
) -> None:
    reply = app.request("POST", path, content=body)
    assert reply.status_code == 400 and fragment in reply.json()["error"], reply.text


def test_a_truncated_gzip_body_is_400(app: InProcess) -> None:
    import gzip

    body = gzip.compress(b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}')[:-6]
    headers = {"content-encoding": "gzip"}
    reply = app.request("POST", "/v1/models/iris:predict", content=body, headers=headers)
    assert reply.status_code == 400 and "gzip" in reply.json()["error"]
