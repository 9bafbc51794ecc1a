"""Reading and writing ONNX files without ever following a path out of their folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError, ValidationError

if TYPE_CHECKING:
    import onnx

# protobuf cannot serialise a message over 2 GiB; larger models keep their weights beside them.
EMBED_LIMIT_BYTES = 1_800_000_000
EXTERNAL_DATA_FILE = "model.onnx.data"


def external_locations(model: onnx.ModelProto) -> list[str]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    locations = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            entries = {e.key: e.value for e in tensor.external_data}
            locations.append(entries.get("location", ""))
    return locations


def check_external_data(model: onnx.ModelProto, folder: Path) -> list[Path]:
    """The external data files ``model`` uses, each proven to lie inside ``folder``."""
    real_folder = folder.resolve()
    files = []
    for location in sorted(set(external_locations(model))):
        candidate = (folder / location).resolve()
        if (
            not location
            or Path(location).is_absolute()
            or not candidate.is_relative_to(real_folder)
        ):
            raise ValidationError(
                f"external data location {location!r} is outside the model's folder"
            )
        if not candidate.is_file():
            raise ValidationError(f"external data file {location!r} is missing")
        files.append(candidate)
    return files


def load(path: Path) -> onnx.ModelProto:
    """Load an ONNX file and its external data, confined to the file's own folder."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import load_external_data_for_model

    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ValidationError(f"{path.name} is not a valid ONNX file ({exc})") from None
    if check_external_data(model, path.parent):
        load_external_data_for_model(model, str(path.parent))
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
