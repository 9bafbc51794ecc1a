"""Input data from the command line or files: inline JSON, ``.json``, ``.npy``, ``.npz``, ``.csv``.

Binary formats keep their dtypes. Text formats carry no precision, so their numbers become
float32 (the dtype nearly every exported model takes) and the signature coerces from there.
Nothing here unpickles: ``.npy``/``.npz`` are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, UsageError, foreign_message
from .signature import TensorSpec

if TYPE_CHECKING:
    import numpy as np

SUFFIXES = (".json", ".npy", ".npz", ".csv")
MAX_JSON_DEPTH = 64


@dataclass
class Table:
    """Named columns of equal length, as read from a CSV file."""

    columns: dict[str, np.ndarray[Any, Any]]

    def matrix(self) -> np.ndarray[Any, Any]:
        import numpy as np

        if any(c.dtype.kind in "USO" for c in self.columns.values()):
            raise InputError("the CSV has text columns; this model takes one numeric matrix")
        return np.stack(list(self.columns.values()), axis=1).astype(np.float32)


Loaded = Any  # np.ndarray | dict[str, np.ndarray] | Table | a JSON value


def parse_argument(text: str) -> Loaded:
    """``--input`` value: ``@FILE`` loads a file; anything else is inline JSON."""
    if text.startswith("@"):
        return load_file(Path(text[1:]))
    try:
        return _checked_depth(json.loads(text, parse_constant=_refuse_constant("--input")))
    except json.JSONDecodeError as exc:
        raise InputError(f"--input is not valid JSON ({exc.msg} at column {exc.colno})") from None


def _refuse_constant(where: str) -> Callable[[str], Any]:
    """JSON has no NaN or infinity: the server refuses them in a JSON body (400), and so do
    local commands, so an input never works here and fails there. Binary files carry them."""

    def refuse(constant: str) -> Any:
        raise InputError(
            f"{where} is not valid JSON ({constant} is no JSON number: JSON has no NaN or "
            "infinity; give them in a .npy or .npz file)"
        )

    return refuse


def load_file(path: Path) -> Loaded:
    import numpy as np

    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"{path.name}: unsupported input file type; use {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise UsageError(f"input file {path} does not exist")
    try:
        if suffix == ".json":
            text = path.read_text(encoding="utf-8")
            return _checked_depth(json.loads(text, parse_constant=_refuse_constant(path.name)))
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:  # JSON errors, pickled arrays, bad headers
        raise InputError(f"{path.name} cannot be read: {foreign_message(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name} cannot be read ({exc.__class__.__name__})") from None


def _checked_depth(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"input nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, list):
        for item in value:
            _checked_depth(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _checked_depth(item, depth + 1)
    return value


def _read_csv(path: Path) -> Table:
    import numpy as np

    with path.open(newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise InputError(f"{path.name}: a CSV needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if len(set(header)) != len(header) or any(not name.strip() for name in header):
        raise InputError(f"{path.name}: the header needs unique, non-empty column names")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(f"{path.name}: line {number} has {len(row)} fields, not {len(header)}")
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for index, name in enumerate(header):
        cells = [row[index].strip() for row in body]
        try:
            columns[name.strip()] = np.array([float(c) for c in cells], dtype=np.float32)
        except ValueError:
            columns[name.strip()] = np.array(cells, dtype=str)
    return Table(columns)


def bind(names: Sequence[str], data: Loaded) -> dict[str, Any]:
    """Match loaded data to a model's inputs: by name (an object, a CSV's columns), or the data
    itself for a model with one input. Every input must be there, and nothing else."""
    if isinstance(data, Table):
        if set(data.columns) == set(names):  # one input per column, each [N, 1]
            return {name: data.columns[name].reshape(-1, 1) for name in names}
        if len(names) == 1:
            return {names[0]: data.matrix()}
        raise InputError(f"the CSV columns must be the model's inputs: {', '.join(names)}")
    if not isinstance(data, Mapping):
        if len(names) != 1:
            raise InputError(
                f"the model takes {len(names)} inputs ({', '.join(names)}); "
                "give an object keyed by input name"
            )
        return {names[0]: data}
    unknown = [name for name in data if name not in names]
    if unknown:
        raise InputError(
            f"unknown input {', '.join(map(repr, unknown))}; "
            f"the model takes {', '.join(map(repr, names))}"
        )
    missing = [name for name in names if name not in data]
    if missing:
        raise InputError(f"missing input {', '.join(map(repr, missing))}")
    return dict(data)


def to_feeds(specs: Sequence[TensorSpec], data: Loaded) -> dict[str, np.ndarray[Any, Any]]:
    """Data bound to a signature: each input matched (``bind``) and coerced to its spec's dtype
    and shape (``coerce_tensor``). The one way data becomes a model's inputs, local or served."""
    bound = bind([spec.name for spec in specs], data)
    return {spec.name: coerce_tensor(spec, bound[spec.name]) for spec in specs}


def check_sample(shapes: Mapping[str, Sequence[object] | None], sample: Mapping[str, Any]) -> None:
    """A sample against the input shapes a model declares, in one wording for every framework.

    A dimension that is an int is fixed, anything else (None, a name, a symbol) is variable; the
    first axis is the batch, and a sample may leave it out (one row). A misfit is an InputError.
    """
    import numpy as np

    several = len(shapes) > 1
    for name, declared in shapes.items():
        if declared is None or name not in sample:
            continue
        want, got = list(declared), list(np.shape(sample[name]))
        rows = got[1:] if len(got) == len(want) else got if len(got) == len(want) - 1 else None
        if rows is not None and all(
            not isinstance(w, int) or w == g for w, g in zip(want[1:], rows, strict=True)
        ):
            continue
        subject = f"the sample's input {name!r}" if several else "the sample"
        if len(want) == 2 and rows is not None and len(rows) == 1:
            raise InputError(f"{subject} has {rows[0]} columns; the model takes {want[1]}")
        text = ", ".join(str(w) if isinstance(w, int) else "?" for w in want)
        raise InputError(f"{subject} has shape {got}; the model takes [{text}]")


def as_arrays(data: Loaded) -> Table | dict[str, np.ndarray[Any, Any]] | np.ndarray[Any, Any]:
    """A sample as arrays: one matrix, one array per named input, or named columns (a Table)."""
    import numpy as np

    if isinstance(data, Table):
        return data
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        return Table({str(c): _column(data[c].to_numpy()) for c in data.columns})
    if isinstance(data, Mapping):
        return {str(k): _array(v) for k, v in data.items()}
    if isinstance(data, np.ndarray):
        return data
    return _array(data)


def _array(value: Any) -> np.ndarray[Any, Any]:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except ValueError:
        raise InputError("the sample is not a rectangular array") from None
    if array.dtype.kind in "iuf":  # JSON numbers carry no precision
        return array.astype(np.float32)
    if array.dtype.kind == "U":
        return array
    raise InputError("the sample must hold numbers or strings")


def _column(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # pandas keeps strings as objects; numbers keep their dtype (it becomes the input type).
    return values.astype(str) if values.dtype == object else values


# -- coercion to a tensor spec -----------------------------------------------------------


def coerce_tensor(spec: TensorSpec, value: Any, *, strict: bool = False) -> np.ndarray[Any, Any]:
    """``value`` as an array of the spec's dtype and shape, or a one-line InputError (STRICT:
    see ``fit_shape``)."""
    from .coercion import as_array, to_dtype

    where = f"input {spec.name!r}"
    if not spec.is_tensor:
        raise InputError(f"{where} has type {spec.dtype}, which mserve cannot feed")
    array = as_array(value, where)
    array = to_dtype(array, spec, where, value if isinstance(value, list) else None)
    return fit_shape(spec, array, where, strict=strict)


def fit_shape(
    spec: TensorSpec, array: np.ndarray[Any, Any], where: str, *, strict: bool = False
) -> np.ndarray[Any, Any]:
    """``array`` (already of the right dtype) checked against the spec's rank and fixed dims.
    Unless STRICT (a wire request, which declares its shape), one row without its batch axis
    gets the axis, as a user giving one example means."""
    if spec.shape is None:
        return array
    rank = len(spec.shape)
    batch_axis = spec.shape[0] if rank else 0
    if (
        not strict
        and array.ndim == rank - 1
        and (batch_axis == 1 or not isinstance(batch_axis, int))
    ):
        array = array.reshape((1, *array.shape))
    if array.ndim != rank:
        raise InputError(
            f"{where} expects rank {rank} {spec.shape_text()}, got shape {list(array.shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"{where} expects {spec.shape_text()}, got {list(array.shape)} "
                f"(dimension {axis} must be {want})"
            )
    return array
