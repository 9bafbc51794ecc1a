"""mserve.confined and the external-data walker of mserve.onnx_files: nothing outside a folder
is read, whatever a link or a location in the model says."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mserve import confined, onnx_files
from mserve.errors import ValidationError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "m" / "1").mkdir(parents=True)
    (tmp_path / "root" / "m" / "1" / "inside.bin").write_bytes(b"inside")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return tmp_path / "root"


def test_a_plain_file_is_read(root: Path) -> None:
    assert confined.read_bytes(root, "m/1/inside.bin") == b"inside"


def test_a_symlinked_file_is_refused_even_to_a_file_inside(root: Path) -> None:
    (root / "m" / "1" / "out.bin").symlink_to(root.parent / "secret.txt")
    (root / "m" / "1" / "in.bin").symlink_to("inside.bin")
    for name in ("out.bin", "in.bin"):
        with pytest.raises(confined.UnsafeFile, match="symbolic link") as caught:
            confined.read_bytes(root, f"m/1/{name}", label="m:1")
        assert str(root) not in str(caught.value)  # no host path in the message


def test_a_symlinked_folder_on_the_way_is_refused(root: Path) -> None:
    outside = root.parent / "elsewhere"
    (outside / "1").mkdir(parents=True)
    (outside / "1" / "inside.bin").write_bytes(b"outside")
    (root / "evil").symlink_to(outside)
    with pytest.raises(confined.UnsafeFile, match="symbolic link"):
        confined.read_bytes(root, "evil/1/inside.bin")


def test_a_hard_link_is_refused_and_the_message_says_why(root: Path) -> None:
    os.link(root.parent / "secret.txt", root / "m" / "1" / "linked.bin")
    with pytest.raises(confined.UnsafeFile, match="2 hard links.*cannot be told apart"):
        confined.read_bytes(root, "m/1/linked.bin")


def test_a_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "m" / "1" / "pipe")
    with pytest.raises(confined.UnsafeFile, match="not a regular file"):
        confined.read_bytes(root, "m/1/pipe")


@pytest.mark.parametrize("relative", ["", "/etc/passwd", "../secret.txt", "m/../../x", "a\0b"])
def test_names_that_could_lead_out_are_refused(root: Path, relative: str) -> None:
    with pytest.raises(confined.UnsafeFile):
        confined.read_bytes(root, relative)


# -- every external-data reference, wherever it sits in the model ---------------------------


def _external(name: str, location: str) -> TensorProto:
    tensor = numpy_helper.from_array(np.ones(4, np.float32), name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _model(place: str, location: str) -> onnx.ModelProto:
    """A model whose only external tensor sits in ``place``."""
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    initializers, sparse = [], []
    if place == "initializer":
        initializers.append(_external("w", location))
    elif place == "constant attribute":
        nodes.append(helper.make_node("Constant", [], ["c"], value=_external("c", location)))
    elif place == "sparse initializer":
        indices = numpy_helper.from_array(np.array([0], np.int64), "i")
        sparse.append(helper.make_sparse_tensor(_external("s", location), indices, [4]))
    elif place == "sparse indices":
        values = numpy_helper.from_array(np.ones(1, np.float32), "s")
        sparse.append(helper.make_sparse_tensor(values, _external("i", location), [4]))
    elif place == "sparse attribute":
        indices = numpy_helper.from_array(np.array([0], np.int64), "i")
        value = helper.make_sparse_tensor(_external("s", location), indices, [4])
        nodes.append(helper.make_node("Constant", [], ["c"], sparse_value=value))
    elif place == "subgraph":
        body = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["o"])],
            "then",
            [],
            [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])],
            [_external("w", location)],
        )
        nodes.append(helper.make_node("If", ["cond"], ["o"], then_branch=body, else_branch=body))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializers,
        sparse_initializer=sparse,
    )
    return helper.make_model(graph)


PLACES = [
    "initializer",
    "constant attribute",
    "sparse initializer",
    "sparse indices",
    "sparse attribute",
    "subgraph",
]


@pytest.mark.parametrize("place", PLACES)
def test_every_external_reference_is_found(place: str) -> None:
    assert onnx_files.external_locations(_model(place, "weights.bin")) == ["weights.bin"]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "a\0b", "", "x/../../y"])
def test_a_location_leading_out_is_a_validation_error(place: str, location: str) -> None:
    with pytest.raises(ValidationError, match="outside the model's folder"):
        onnx_files.external_locations(_model(place, location))


def test_a_source_onnx_file_may_not_take_external_data_through_a_link(tmp_path: Path) -> None:
    """Export reads an ONNX source's external data the same confined way."""
    (tmp_path / "secret.bin").write_bytes(np.full(4, 7, np.float32).tobytes())
    source = tmp_path / "src"
    source.mkdir()
    os.link(tmp_path / "secret.bin", source / "weights.bin")
    onnx.save(_model("initializer", "weights.bin"), source / "m.onnx")
    with pytest.raises(confined.UnsafeFile, match="hard links"):
        onnx_files.load(source / "m.onnx")
