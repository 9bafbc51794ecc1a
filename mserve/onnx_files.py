"""Reading and writing ONNX files without ever following a path out of their folder.

Every tensor of a model is found by one walker (``all_tensors``): graph initializers, sparse
initializers (values and indices), tensors in node attributes (a Constant's ``value``, a
SparseTensor attribute), and the same in every subgraph (If, Loop, Scan bodies), function and
training graph. ``onnx.external_data_helper`` misses sparse tensors, and so do some onnxruntime
releases; every external-data reference is checked here, so neither is relied on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import confined
from .errors import UsageError, ValidationError

if TYPE_CHECKING:
    import onnx

# protobuf cannot serialise a message over 2 GiB; larger models keep their weights beside them.
EMBED_LIMIT_BYTES = 1_800_000_000
EXTERNAL_DATA_FILE = "model.onnx.data"
Found = tuple["onnx.TensorProto", bool]  # a tensor, and whether it is a main-graph initializer


@dataclass(frozen=True)
class ExternalReference:
    location: str
    offset: int
    length: int | None  # None: to the end of the file


def all_tensors(model: onnx.ModelProto) -> Iterator[Found]:
    """Every tensor in ``model``, each with whether it is an initializer of the main graph."""
    yield from _graph_tensors(model.graph, main=True)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
    for training in model.training_info:
        yield from _graph_tensors(training.initialization, main=False)
        yield from _graph_tensors(training.algorithm, main=False)


def _graph_tensors(
    graph: onnx.GraphProto, *, main: bool
) -> Iterator[tuple[onnx.TensorProto, bool]]:
    for tensor in graph.initializer:
        yield tensor, main
    for sparse in graph.sparse_initializer:
        yield sparse.values, False
        yield sparse.indices, False
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[Found]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t, False
        for tensor in attribute.tensors:
            yield tensor, False
        sparse_tensors = list(attribute.sparse_tensors)
        if attribute.HasField("sparse_tensor"):
            sparse_tensors.append(attribute.sparse_tensor)
        for sparse in sparse_tensors:
            yield sparse.values, False
            yield sparse.indices, False
        subgraphs = list(attribute.graphs)
        if attribute.HasField("g"):
            subgraphs.append(attribute.g)
        for subgraph in subgraphs:
            yield from _graph_tensors(subgraph, main=False)


def is_external(tensor: onnx.TensorProto) -> bool:
    from onnx import TensorProto

    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


def reference(tensor: onnx.TensorProto) -> ExternalReference:
    """Where an external tensor's bytes are; ValidationError for a location that could lead
    anywhere but a file in the model's own folder (absolute, ``..``, NUL, empty)."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    try:
        confined.check_relative(location)
        offset = int(entries.get("offset") or 0)
        length = int(entries["length"]) if entries.get("length") else None
    except (confined.UnsafeFile, ValueError):
        raise ValidationError(
            f"tensor {tensor.name!r}: external data location {location!r} is outside the "
            "model's folder or not a file name"
        ) from None
    if offset < 0 or (length is not None and length < 0):
        raise ValidationError(f"tensor {tensor.name!r}: negative external data offset or length")
    return ExternalReference(location, offset, length)


def external_locations(model: onnx.ModelProto) -> list[str]:
    """Every external-data file ``model`` uses, each checked to name a file in its folder."""
    return sorted({reference(t).location for t, _ in all_tensors(model) if is_external(t)})


def embed(
    model: onnx.ModelProto, files: Mapping[str, bytes], *, keep_main_initializers: bool = False
) -> None:
    """Copy external tensors' bytes from ``files`` (by location) into ``model``.

    With ``keep_main_initializers`` the main graph's initializers stay external (onnxruntime
    takes their files from memory, whatever their size); every other tensor is embedded,
    because onnxruntime does not read sparse tensors from in-memory files correctly.
    """
    from onnx import TensorProto

    for tensor, main_initializer in all_tensors(model):
        if not is_external(tensor) or (keep_main_initializers and main_initializer):
            continue
        where = reference(tensor)
        content = files[where.location]
        end = len(content) if where.length is None else where.offset + where.length
        if end > len(content):
            raise ValidationError(
                f"tensor {tensor.name!r}: external data runs past the end of {where.location!r}"
            )
        tensor.raw_data = content[where.offset : end]
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def parse(data: bytes, name: str) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeWarning):  # protobuf's reason says no more
        raise ValidationError(f"{name} is not a valid ONNX model") from None


def load(path: Path) -> onnx.ModelProto:
    """Load an ONNX source file with its external data embedded; the external data files are
    read through ``confined``: in the file's own folder, no links, no hard links."""
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    try:
        model = parse(path.read_bytes(), path.name)
    except OSError as exc:
        raise UsageError(f"cannot read {path.name} ({exc.strerror})") from None
    files = {
        location: confined.read_bytes(path.parent, location, label=path.name)
        for location in external_locations(model)
    }
    embed(model, files)
    return model


def save(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as one file, or with its weights in ``model.onnx.data`` when too large."""
    import onnx

    if model.ByteSize() < EMBED_LIMIT_BYTES:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=EXTERNAL_DATA_FILE,
        )
