from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from mserve.signature import Signature, TensorSpec, compare_signatures


def graph_model(inputs: list, outputs: list, initializers: list | None = None) -> onnx.ModelProto:
    node = helper.make_node("Identity", [inputs[0].name], [outputs[0].name])
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=initializers or [])
    return helper.make_model(graph)


def test_from_onnx_reads_names_dtypes_and_symbolic_dims() -> None:
    model = graph_model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    signature = Signature.from_onnx(model)
    assert signature.inputs == (TensorSpec("x", "float32", ("batch", 4)),)
    assert signature.outputs == (TensorSpec("y", "float32", (None, 4)),)
    assert Signature.from_dict(signature.to_dict()) == signature


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    model = graph_model(
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [weight],
    )
    assert [t.name for t in Signature.from_onnx(model).inputs] == ["x"]


def test_non_tensor_outputs_are_described() -> None:
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.INT64, None)
    model = graph_model([helper.make_tensor_value_info("x", TensorProto.STRING, [None])], [seq])
    signature = Signature.from_onnx(model)
    assert signature.inputs[0].dtype == "string"
    assert signature.outputs[0] == TensorSpec("s", "sequence(int64)", None)
    assert not signature.outputs[0].is_tensor


def spec(name: str, dtype: str = "float32", shape: tuple = (None, 4)) -> TensorSpec:
    return TensorSpec(name, dtype, shape)


def sig(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Signature:
    return Signature(tuple(inputs), tuple(outputs))


BASE = sig([spec("x")], [spec("y", shape=(None, 3))])


@pytest.mark.parametrize(
    ("new", "breaking", "message"),
    [
        (sig([spec("x2")], [spec("y", shape=(None, 3))]), True, "removed or renamed"),
        (sig([spec("x")], []), True, "removed or renamed"),
        (
            sig([spec("x", "float64")], [spec("y", shape=(None, 3))]),
            True,
            "dtype float32 -> float64",
        ),
        (sig([spec("x", shape=(None, 4, 1))], [spec("y", shape=(None, 3))]), True, "rank 2 -> 3"),
        (sig([spec("x", shape=(8, 4))], [spec("y", shape=(None, 3))]), True, "variable -> fixed 8"),
        (
            sig([spec("x", shape=(None, 5))], [spec("y", shape=(None, 3))]),
            True,
            "dimension 1: 4 -> 5",
        ),
        (
            sig([spec("x"), spec("z")], [spec("y", shape=(None, 3))]),
            True,
            "existing clients do not send it",
        ),
        (sig([spec("x")], [spec("y", shape=(None, 3)), spec("extra")]), False, "new output"),
        (
            sig([spec("x", shape=(None, "n"))], [spec("y", shape=(None, 3))]),
            False,
            "fixed 4 -> variable",
        ),
        (sig([spec("x", shape=("batch", 4))], [spec("y", shape=(None, 3))]), False, None),
    ],
)
def test_compatibility_rules(new: Signature, breaking: bool, message: str | None) -> None:
    report = compare_signatures(BASE, new)
    assert report.compatible is not breaking
    if message is None:
        assert report.changes == []
    else:
        assert any(message in c.message for c in report.changes), report.changes


def test_identical_signatures_are_compatible() -> None:
    assert compare_signatures(BASE, BASE).to_dict() == {"compatible": True, "changes": []}
