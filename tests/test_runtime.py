from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mserve.errors import InputError, ValidationError
from mserve.runtime import ModelRunner, coerce_tensor, create_session
from mserve.signature import TensorSpec

X = TensorSpec("x", "float32", ("batch", 4))


def test_nested_lists_become_the_signature_dtype() -> None:
    array = coerce_tensor(X, [[1, 2, 3, 4]])
    assert array.dtype == np.float32 and array.shape == (1, 4)


def test_one_row_without_batch_axis_gets_one() -> None:
    assert coerce_tensor(X, [1.0, 2.0, 3.0, 4.0]).shape == (1, 4)


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (X, [[1, 2, 3]], r"expects \[batch, 4\], got \[1, 3\] \(dimension 1 must be 4\)"),
        (X, [[[1, 2, 3, 4]]], r"expects rank 2 \[batch, 4\], got shape \[1, 1, 4\]"),
        (X, [[1, 2], [3]], "not a rectangular array"),
        (X, [["a", "b", "c", "d"]], "expects float32 values, got strings"),
        (X, [[1, "b", 3, 4]], "expects float32 values, got strings"),
        (TensorSpec("n", "int64", (None,)), [1.5, 2.0], "got fractional numbers"),
        (TensorSpec("n", "int64", (None,)), [float("nan")], "got fractional numbers"),
        (TensorSpec("n", "int8", (None,)), [300], "out of range for int8"),
        (TensorSpec("b", "bool", (None,)), [0, 2], "expects booleans"),
        (TensorSpec("s", "string", (None,)), [1, 2], "expects strings, got int64 values"),
        (TensorSpec("m", "map(int64, float32)", None), [1], "cannot feed"),
    ],
)
def test_bad_values_get_one_clear_line(spec: TensorSpec, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        coerce_tensor(spec, value)
    assert "\n" not in str(caught.value)


def test_integral_floats_and_zero_one_become_ints_and_bools() -> None:
    assert coerce_tensor(TensorSpec("n", "int64", (None,)), [1.0, 2.0]).tolist() == [1, 2]
    assert coerce_tensor(TensorSpec("b", "bool", (None,)), [0, 1]).tolist() == [False, True]


def test_strings_become_objects_for_onnxruntime() -> None:
    array = coerce_tensor(TensorSpec("s", "string", (None, 1)), [["a"], [b"b"]])
    assert array.dtype == object and array.tolist() == [["a"], ["b"]]


def write_add_model(path: Path) -> Path:
    node = helper.make_node("Add", ["a", "b"], ["sum"])
    graph = helper.make_graph(
        [node],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx writes its newest IR by default, newer than onnxruntime reads
    onnx.save(model, path)
    return path


def test_runner_checks_names_and_runs(tmp_path: Path) -> None:
    runner = ModelRunner.open(write_add_model(tmp_path / "add.onnx"))
    assert runner.run({"a": [[1, 2]], "b": [[3, 4]]})["sum"].tolist() == [[4.0, 6.0]]
    with pytest.raises(InputError, match="unknown input 'c'; the model takes 'a', 'b'"):
        runner.run({"a": [[1, 2]], "b": [[3, 4]], "c": 1})
    with pytest.raises(InputError, match="missing input 'b'"):
        runner.run({"a": [[1, 2]]})


def test_onnxruntime_rejections_become_input_errors(tmp_path: Path) -> None:
    runner = ModelRunner.open(write_add_model(tmp_path / "add.onnx"))
    with pytest.raises(InputError, match="the model rejected the input"):
        runner.run({"a": [[1, 2], [3, 4]], "b": [[1, 2], [3, 4], [5, 6]]})


def test_a_broken_model_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ValidationError, match="onnxruntime cannot load the model"):
        create_session(path)


def test_onnxruntime_messages_lose_paths_and_source_locations(tmp_path: Path) -> None:
    path = write_add_model(tmp_path / "add.onnx")
    model = onnx.load(path)
    model.ir_version = 99
    onnx.save(model, path)
    with pytest.raises(ValidationError) as caught:
        create_session(path)
    message = str(caught.value)
    assert str(tmp_path) not in message and "onnxruntime_src" not in message
    assert "IR version" in message
