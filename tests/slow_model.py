"""A model whose run time the request chooses: ``steps`` (INT64, one per row) runs a Loop of
256x256 matrix products max(steps) times; ``y`` (FP32, one per row) is steps times a checksum.
It makes slow requests real (no sleeps in the server) for admission and timeout tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import mserve


def slow_model() -> object:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "w")
    start = numpy_helper.from_array(np.eye(256, dtype=np.float32), "start")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["v_in", "w"], ["product"]),
            helper.make_node("Tanh", ["product"], ["v_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [256, 256]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [256, 256]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["steps"], ["trips"], keepdims=0),
            helper.make_node(
                "Constant",
                [],
                ["true"],
                value=helper.make_tensor("t", TensorProto.BOOL, [], [True]),
            ),
            helper.make_node("Loop", ["trips", "true", "start"], ["final"], body=body),
            helper.make_node("ReduceSum", ["final"], ["checksum"], keepdims=0),
            helper.make_node("Cast", ["steps"], ["steps_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["steps_f", "checksum"], ["y"]),
        ],
        "slow",
        [helper.make_tensor_value_info("steps", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [weight, start],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def publish_slow(repo: Path) -> None:
    mserve.export(slow_model(), name="slow", repo=repo, sample=np.array([1, 2], dtype=np.int64))
