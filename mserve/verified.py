"""A published version's model, read once, checked against its manifest, and handed to
onnxruntime as bytes: the one way export, validate, predict and the server open a version.

Why bytes: checking a file's sha256 and then giving onnxruntime its path leaves a window in
which the file can be swapped (and onnxruntime would follow a link or a ``..`` of its own). So
``model.onnx`` and every external-data file are read through the repository (in a folder,
through ``mserve.confined``: no symbolic link below its root, no hard links, regular files
only), hashed in memory against the manifest, and only those bytes reach onnxruntime: the
model as a serialized message, the external-data files through ``SessionOptions.
add_external_initializers_from_files_in_memory``. onnxruntime never opens a file of the
version itself. Every external reference in the model (sparse tensors, attributes and
subgraphs included) must name a file the manifest lists; tensors other than the main graph's
initializers are embedded into the message, because onnxruntime reads those wrongly from
in-memory files (zeros, silently, in 1.32).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import onnx_files
from .errors import ValidationError
from .manifest import MODEL_FILE, Manifest

if TYPE_CHECKING:
    import onnx

    from .repository import Repository


@dataclass
class VerifiedModel:
    """A model ready for onnxruntime: its message and its external-data files, all checked."""

    model: onnx.ModelProto
    files: dict[str, bytes] = field(default_factory=dict)  # external data, by location

    def serialized(self) -> bytes:
        return bytes(self.model.SerializeToString())


def read_verified(
    repository: Repository, model: str, version: int, relative: str, manifest: Manifest
) -> bytes:
    """A version's file, read confined and matched against the sha256 its manifest records."""
    label = f"{model}:{version}"
    expected = manifest.files.get(relative)
    if expected is None:
        raise ValidationError(f"{label}: {relative} is not listed in the manifest")
    data = repository.read_bytes(model, f"{version}/{relative}", label=label)
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValidationError(f"{label}: {relative} does not match the sha256 in its manifest")
    return data


def open_model(
    repository: Repository, model: str, version: int, manifest: Manifest | None = None
) -> tuple[Manifest, VerifiedModel]:
    """The version's manifest and model, every byte checked (ValidationError if any is not)."""
    manifest = manifest or repository.manifest(model, version)
    data = read_verified(repository, model, version, MODEL_FILE, manifest)
    proto = onnx_files.parse(data, MODEL_FILE)
    files = {
        location: read_verified(repository, model, version, location, manifest)
        for location in onnx_files.external_locations(proto)
    }
    onnx_files.embed(proto, files, keep_main_initializers=True)
    return manifest, VerifiedModel(proto, files)
