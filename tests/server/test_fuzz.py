"""Fuzzing, in process and bounded: V2 JSON bodies (with and without the binary extension), TF
Serving bodies and gRPC ModelInferRequest messages, plausible and junk, against the real data
plane and codecs. Whatever arrives, the answer is a client error or a success: never a 5xx,
INTERNAL or UNKNOWN, and an error is one line of ``{"error": str}`` that names no path,
exception class or traceback; nothing is logged with a traceback.

Examples are derandomized, so a run in CI is the same run every time.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2

import mserve
from mserve.server.grpc import INTERNAL, SERVICE, InferenceService

from .conftest import InProcess

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UNKNOWN = 2  # gRPC's status for an error nobody mapped
TYPED = {  # input -> (ONNX type, V2 datatype): one of each kind a codec treats apart
    "f": (TensorProto.FLOAT, "FP32"),
    "h": (TensorProto.FLOAT16, "FP16"),
    "i": (TensorProto.INT64, "INT64"),
    "u": (TensorProto.UINT64, "UINT64"),
    "b": (TensorProto.BOOL, "BOOL"),
    "s": (TensorProto.STRING, "BYTES"),
}
LEAKS = re.compile(r"Traceback|File \"|\b[A-Z]\w*(Error|Exception)\b|/tmp/|/work/|/home/|/usr/")


@pytest.fixture(scope="module")
def fuzz_repo(tmp_path_factory: pytest.TempPathFactory, iris_pipeline: Any, iris_data: Any) -> Path:
    """iris:1 (one float input) and typed:1 (an identity over one input of each dtype)."""
    repo = tmp_path_factory.mktemp("fuzz") / "models"
    mserve.export(iris_pipeline, name="iris", repo=repo, sample=iris_data[0][::10])
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in TYPED],
        "typed",
        [helper.make_tensor_value_info(n, t, ["batch", 2]) for n, (t, _) in TYPED.items()],
        [helper.make_tensor_value_info(f"{n}_out", t, ["batch", 2]) for n, (t, _) in TYPED.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, repo.parent / "typed.onnx")
    sample = {
        "f": np.zeros((1, 2), np.float32),
        "h": np.zeros((1, 2), np.float16),
        "i": np.zeros((1, 2), np.int64),
        "u": np.zeros((1, 2), np.uint64),
        "b": np.zeros((1, 2), np.bool_),
        "s": np.array([["a", "b"]], dtype=object),
    }
    mserve.export(repo.parent / "typed.onnx", name="typed", repo=repo, sample=sample)
    return repo


@pytest.fixture(scope="module")
def app(fuzz_repo: Path) -> InProcess:
    return InProcess(fuzz_repo)


@pytest.fixture(autouse=True)
def no_traceback_logged() -> Iterator[None]:
    """A client's error is never logged with a traceback (the fuzz also finds server faults
    through this: an unexpected exception is logged with one)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    assert [r.getMessage() for r in records if r.exc_info or r.levelno >= logging.ERROR] == []


def dumps(value: Any) -> bytes:
    """JSON of any size of integer (orjson writes 64 bits at most)."""
    return json.dumps(value).encode()


def assert_client_error(status: int, body: bytes) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        reply = orjson.loads(body)
        assert list(reply) == ["error"] and isinstance(reply["error"], str), reply
        assert "\n" not in reply["error"] and not LEAKS.search(reply["error"]), reply


# -- strategies ----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2**63, -(2**63) - 1, 2**64, 1e39, 65504.0, 70000]),
    st.text(max_size=6),
    st.sampled_from(["NaN", "Infinity", "1.5", "true"]),
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
tensor_data = st.recursive(
    st.lists(scalars, max_size=6),
    lambda inner: st.lists(inner, min_size=1, max_size=3),
    max_leaves=16,
)
shapes = st.lists(st.integers(min_value=-2, max_value=2**40), max_size=4) | st.lists(
    st.integers(min_value=0, max_value=4), min_size=1, max_size=3
)
parameters = st.fixed_dictionaries(
    {},
    optional={
        "binary_data_size": st.integers(min_value=-1, max_value=64) | scalars,
        "binary_data": scalars,
        "binary_data_output": scalars,
    },
)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly VALUES, sometimes anything at all (wrong types at every key)."""
    return st.one_of(values, values, values, junk)


v2_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(st.sampled_from([*TYPED, "X", "nope"])),
        "datatype": maybe(
            st.sampled_from(["FP32", "FP16", "FP64", "INT64", "UINT64", "INT8", "BOOL", "BYTES"])
        ),
        "shape": maybe(shapes),
        "data": maybe(tensor_data),
        "parameters": maybe(parameters),
    },
)
v2_output = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(st.sampled_from(["f_out", "label", "nope"])),
        "parameters": maybe(parameters),
    },
)
v2_request = st.fixed_dictionaries(
    {},
    optional={
        "inputs": maybe(st.lists(maybe(v2_tensor), max_size=4)),
        "outputs": maybe(st.lists(maybe(v2_output), max_size=3)),
        "parameters": maybe(parameters),
        "id": maybe(st.text(max_size=8)),
    },
)


def well_formed(rows: int) -> dict[str, Any]:
    """A correct request for typed:1, to mutate from."""
    values = {"f": 0.5, "h": 1.5, "i": -3, "u": 7, "b": True, "s": "x"}
    return {
        "inputs": [
            {"name": n, "datatype": t, "shape": [rows, 2], "data": [values[n]] * (rows * 2)}
            for n, (_, t) in TYPED.items()
        ]
    }


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A correct typed:1 request with one field of one input replaced."""
    request = well_formed(draw(st.integers(min_value=0, max_value=3)))
    tensor = draw(st.sampled_from(request["inputs"]))
    key = draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters"]))
    tensor[key] = draw(
        {"name": junk, "datatype": junk, "shape": shapes | junk, "data": tensor_data | junk}.get(
            key, parameters | junk
        )
    )
    return request


# -- V2 REST -------------------------------------------------------------------------------


def post_both_paths(app: InProcess, path: str, body: bytes, headers: dict[str, str]) -> None:
    """Through ASGI and through the fast path's entry (RestApp.infer_direct): same answer."""
    reply = app.request("POST", path, content=body, headers=headers)
    assert_client_error(reply.status_code, reply.content)
    rest = app.server.rest
    if rest.direct_route(path.encode()) is not None:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        answer = rest.infer_direct(path, raw, body, time.perf_counter())
        if inspect.iscoroutine(answer):
            answer = asyncio.run(answer)
        status, _, direct_body = answer
        assert (status, direct_body) == (reply.status_code, reply.content)


@FUZZ
@given(request=st.one_of(v2_request, mutated()), model=st.sampled_from(["typed", "iris"]))
def test_v2_json_bodies(app: InProcess, request: Any, model: str) -> None:
    post_both_paths(app, f"/v2/models/{model}/infer", dumps(request), {})


@FUZZ
@given(
    request=st.one_of(v2_request, mutated()),
    binary=st.binary(max_size=48),
    length=st.none()
    | st.integers(min_value=-4, max_value=400)
    | st.text("0123456789-+ x", max_size=4),
)
def test_v2_binary_extension(app: InProcess, request: Any, binary: bytes, length: Any) -> None:
    header = dumps(request)
    if length is None:
        length = len(header)
    post_both_paths(
        app,
        "/v2/models/typed/infer",
        header + binary,
        {"Inference-Header-Content-Length": str(length)},
    )


@FUZZ
@given(body=st.binary(max_size=200), model=st.sampled_from(["typed", "iris"]))
def test_v2_arbitrary_bytes(app: InProcess, body: bytes, model: str) -> None:
    post_both_paths(app, f"/v2/models/{model}/infer", body, {})


# -- TF Serving REST -----------------------------------------------------------------------

b64 = st.builds(
    lambda b: {"b64": base64.b64encode(b).decode()}, st.binary(max_size=6)
) | st.dictionaries(st.sampled_from(["b64", "x"]), scalars, max_size=2)
tf_values = st.recursive(
    st.lists(scalars | b64, max_size=4),
    lambda inner: st.lists(inner, min_size=1, max_size=3),
    max_leaves=12,
)
tf_request = st.fixed_dictionaries(
    {},
    optional={
        "instances": maybe(
            tf_values | st.lists(st.dictionaries(st.sampled_from([*TYPED, "X"]), tf_values))
        ),
        "inputs": maybe(tf_values | st.dictionaries(st.sampled_from([*TYPED, "X"]), tf_values)),
        "examples": maybe(
            st.lists(st.dictionaries(st.sampled_from([*TYPED, "X"]), scalars | tf_values))
        ),
        "context": junk,
        "signature_name": maybe(st.sampled_from(["serving_default", "", "other"])),
    },
)


@FUZZ
@given(
    request=tf_request,
    verb=st.sampled_from(["predict", "classify", "regress"]),
    model=st.sampled_from(["typed", "iris"]),
)
def test_tfserving_bodies(app: InProcess, request: Any, verb: str, model: str) -> None:
    post_both_paths(app, f"/v1/models/{model}:{verb}", dumps(request), {})


@FUZZ
@given(
    depth=st.integers(min_value=1, max_value=3000),
    key=st.sampled_from(["instances", "inputs"]),
    token=st.sampled_from(["1", "NaN", '{"b64": "eA=="}', "[]"]),
)
def test_tfserving_deep_nesting(app: InProcess, depth: int, key: str, token: str) -> None:
    body = f'{{"{key}": {"[" * depth}{token}{"]" * depth}}}'.encode()
    post_both_paths(app, "/v1/models/iris:predict", body, {})


# -- gRPC ----------------------------------------------------------------------------------

CONTENTS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]


@st.composite
def infer_messages(draw: st.DrawFn) -> bytes:
    message = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(["typed", "iris", "", "nope"]) | st.text(max_size=6)),
        model_version=draw(
            st.sampled_from(["", "1", "01", "-1", "2", "1.0"]) | st.text(max_size=4)
        ),
        id=draw(st.text(max_size=4)),
    )
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        tensor = message.inputs.add(
            name=draw(st.sampled_from([*TYPED, "X", ""])),
            datatype=draw(
                st.sampled_from(["FP32", "FP16", "INT64", "UINT64", "BOOL", "BYTES", "x"])
            ),
            shape=draw(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3)),
        )
        field = draw(st.sampled_from(CONTENTS))
        count = draw(st.integers(min_value=0, max_value=6))
        if field == "bytes_contents":
            getattr(tensor.contents, field).extend(
                draw(st.lists(st.binary(max_size=4), max_size=count))
            )
        elif field == "bool_contents":
            getattr(tensor.contents, field).extend([True] * count)
        elif field.startswith("fp"):
            getattr(tensor.contents, field).extend([1.5] * count)
        else:
            getattr(tensor.contents, field).extend([1] * count)
        if draw(st.booleans()):
            tensor.parameters["binary_data_size"].int64_param = draw(st.integers(-5, 5))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        message.raw_input_contents.append(draw(st.binary(max_size=24)))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        message.outputs.add(name=draw(st.sampled_from(["f_out", "label", "nope", ""])))
    return bytes(message.SerializeToString())


@pytest.fixture(scope="module")
def grpc_service(app: InProcess) -> InferenceService:
    server = app.server
    return InferenceService(server.plane, server.admin, server.rest.routes.server_metadata)


def call(service: InferenceService, method: str, message: bytes) -> tuple[int, str]:
    outcome = service.call(SERVICE + method, message, {})
    if inspect.isawaitable(outcome):
        outcome = asyncio.run(outcome)  # type: ignore[arg-type]
    return outcome.code, outcome.message  # type: ignore[union-attr]


@FUZZ
@given(message=infer_messages() | st.binary(max_size=64))
def test_grpc_model_infer(grpc_service: InferenceService, message: bytes) -> None:
    code, text = call(grpc_service, "ModelInfer", message)
    assert code not in (INTERNAL, UNKNOWN), text
    assert "\n" not in text and not LEAKS.search(text), text


@FUZZ
@given(
    method=st.sampled_from(["ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics"]),
    name=st.sampled_from(["typed", "iris", ""]) | st.text(max_size=8),
    version=st.sampled_from(["", "1", "01", "9" * 30]) | st.text(max_size=4),
)
def test_grpc_model_methods(
    grpc_service: InferenceService, method: str, name: str, version: str
) -> None:
    kind = getattr(service_pb2, f"{method}Request")
    code, text = call(grpc_service, method, kind(name=name, version=version).SerializeToString())
    assert code not in (INTERNAL, UNKNOWN), text
    assert "\n" not in text and not LEAKS.search(text), text
