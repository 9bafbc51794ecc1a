"""The wire codecs both ways: what a client encodes, the server decodes to the same arrays, and
the reverse; the rules that hold whatever the transport."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mserve.errors import InputError
from mserve.protocol import tfserving, v2, v2_grpc
from mserve.protocol.tensors import InferRequest, Plan
from mserve.signature import Signature, TensorSpec

SIGNATURE = Signature(
    (TensorSpec("x", "float32", (None, 2)), TensorSpec("s", "string", (None,))),
    (TensorSpec("y", "float32", (None, 2)), TensorSpec("t", "string", (None,))),
)
PLAN = Plan.of(SIGNATURE)
X = np.array([[0.5, -1.0], [2.0, 3.5]], dtype=np.float32)
S = np.array(["hé", "b"], dtype=object)
INPUTS = {"x": (X, "FP32"), "s": (S, "BYTES")}


@pytest.mark.parametrize("binary", [False, True])
def test_a_client_request_decodes_to_the_same_arrays(binary: bool) -> None:
    body, length = v2.encode_request(INPUTS, binary=binary)
    request = v2.decode_request(body, length, PLAN)
    np.testing.assert_array_equal(request.feeds["x"], X)
    assert request.feeds["s"].tolist() == ["hé", "b"]


def test_grpc_requests_decode_to_the_same_arrays() -> None:
    message = service_pb2.ModelInferRequest.FromString(v2_grpc.encode_request("m", "1", INPUTS))
    request = v2_grpc.decode_request(message, PLAN)
    np.testing.assert_array_equal(request.feeds["x"], X)
    assert request.feeds["s"].tolist() == ["hé", "b"]
    assert request.outputs == [("y", True), ("t", True)]


def test_typed_grpc_contents_carry_strings_as_utf8() -> None:
    message = service_pb2.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend(
        [1, 2]
    )
    message.inputs.add(name="s", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"\xff"
    )
    with pytest.raises(InputError, match="not UTF-8"):
        v2_grpc.decode_request(message, PLAN)


@pytest.mark.parametrize("binary", [False, True])
def test_a_server_reply_decodes_to_the_same_outputs(binary: bool) -> None:
    y = np.array([[np.nan, 1.0], [2.0, np.inf]], dtype=np.float32)
    t = np.array(["hé", "x"], dtype=object)
    request = InferRequest({}, [("y", binary), ("t", binary)])
    body, length = v2.encode_response("m", "3", PLAN, request, [y, t])
    version, outputs = v2.decode_response(body, length)
    assert version == "3"
    if binary:  # exact: NaN and infinity as they are, strings as their UTF-8 bytes
        np.testing.assert_array_equal(outputs["y"], y)
        assert outputs["t"].tolist() == ["hé".encode(), b"x"]
    else:  # JSON has neither NaN nor infinity: both are null, read back as NaN
        assert np.isnan(outputs["y"][0, 0]) and np.isnan(outputs["y"][1, 1])
        assert outputs["t"].tolist() == ["hé", "x"]


def test_grpc_replies_carry_only_what_was_asked() -> None:
    request = InferRequest({}, [("t", True)], "id-1")
    reply = v2_grpc.encode_response("m", "2", PLAN, request, [X, S])
    assert [o.name for o in reply.outputs] == ["t"] and reply.id == "id-1"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"instances": [{"x": [1, 2]}]}', "missing input 's'"),
        (b'{"instances": [[1, 2]]}', "each instance is an object"),
        (b'{"inputs": {"x": [[1, 2]], "s": [{"b64": "/w=="}]}}', "not UTF-8"),
        (b'{"inputs": {"x": [[1, 2]], "s": [{"b64": "!"}]}}', "invalid base64"),
        (b'{"instances": [], "inputs": {}}', "exactly one of"),
        (b"[1", "malformed JSON"),
    ],
)
def test_tf_serving_refusals(body: bytes, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        tfserving.decode_request("predict", body, PLAN)


def test_tf_serving_tokens_and_b64_strings() -> None:
    body = b'{"inputs": {"x": [[NaN, -Infinity]], "s": [{"b64": "aMOp"}]}}'
    request = tfserving.decode_request("predict", body, PLAN)
    assert np.isnan(request.feeds["x"][0, 0]) and request.feeds["x"][0, 1] == -np.inf
    assert request.feeds["s"].tolist() == ["hé"]
    reply = tfserving.encode_predict(PLAN, [request.feeds["x"], np.array(["a"], object)], False)
    assert reply == b'{"outputs":{"y":[[NaN,-Infinity]],"t":["a"]}}'


def test_classify_and_regress_need_the_right_outputs() -> None:
    scores = Plan.of(Signature((TensorSpec("x", "float32", (None, 2)),), SIGNATURE.outputs))
    request = tfserving.decode_request("classify", b'{"examples": [{"x": [1, 2]}]}', scores)
    assert request.output == 0 and request.feeds["x"].shape == (1, 2)
    with pytest.raises(InputError, match="needs a regressor"):
        tfserving.decode_request("regress", b'{"examples": [{"x": [1, 2]}]}', scores)
