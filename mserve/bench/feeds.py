"""The rows a benchmark feeds: an input file, a version's stored samples, or random values
generated from the signature (``--shape`` fills variable dimensions)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .. import inputs
from ..errors import UsageError
from ..signature import TensorSpec, numpy_dtype

if TYPE_CHECKING:
    import numpy as np

    from .measure import Array

RANDOM = "random"
InputSource = Path | Literal["random"] | None  # a file, random values, or the default


def rows(
    specs: list[TensorSpec], source: InputSource, stored: dict[str, Array] | None
) -> tuple[dict[str, Array] | None, str]:
    """Rows to feed, and where they came from: a file, else the version's stored samples (when
    given), else None (random values)."""
    if source == RANDOM:
        return None, "random values from the signature"
    if isinstance(source, Path):
        return inputs.to_feeds(specs, inputs.load_file(source)), f"file {source}"
    if stored is not None:
        return stored, "stored samples"
    return None, "random values from the signature"


def parse_shapes(texts: list[str]) -> dict[str, tuple[int, ...]]:
    """``--shape name=1,3,224,224`` options as {name: shape}."""
    shapes = {}
    for text in texts:
        name, _, dims = text.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) < 1:
            raise UsageError(f"--shape {text!r}: use NAME=D1,D2,... with positive sizes")
        shapes[name] = shape
    return shapes


def make_inputs(
    specs: list[TensorSpec],
    batch_size: int,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    data: Mapping[str, Array] | None = None,
) -> dict[str, Array]:
    """One request's inputs with ``batch_size`` rows: rows of ``data`` repeated as needed, else
    random values of each input's dtype and shape (``shapes`` fills variable dimensions)."""
    import numpy as np

    shapes = shapes or {}
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise UsageError(f"--shape names {unknown[0]!r}, which is not an input of the model")
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in specs:
        if not spec.is_tensor or spec.shape is None:
            raise UsageError(f"input {spec.name!r} is not a tensor of known rank; mserve bench")
        batchable = bool(spec.shape) and not isinstance(spec.shape[0], int)
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch_size:
            raise UsageError(
                f"input {spec.name!r} has a fixed first dimension of {spec.shape[0]}: "
                f"batch size {batch_size} cannot be fed"
            )
        if data is not None and spec.name in data:
            rows = np.asarray(data[spec.name])
            if not batchable or rows.ndim == 0 or not len(rows):
                arrays[spec.name] = rows
                continue
            arrays[spec.name] = np.take(rows, np.arange(batch_size) % len(rows), axis=0)
            continue
        shape = _shape(spec, batch_size, shapes.get(spec.name))
        arrays[spec.name] = _random(rng, spec.dtype, shape)
    return arrays


def _shape(spec: TensorSpec, batch_size: int, given: tuple[int, ...] | None) -> tuple[int, ...]:
    assert spec.shape is not None
    if given is not None:
        if len(given) != len(spec.shape):
            raise UsageError(
                f"--shape {spec.name}: the input has rank {len(spec.shape)}, not {len(given)}"
            )
        dims = list(given)
        for axis, want in enumerate(spec.shape):
            if isinstance(want, int) and want != dims[axis]:
                raise UsageError(f"--shape {spec.name}: dimension {axis} must be {want}")
    else:
        dims = []
        for axis, want in enumerate(spec.shape):
            if isinstance(want, int):
                dims.append(want)
            elif axis == 0:
                dims.append(batch_size)
            else:
                raise UsageError(
                    f"input {spec.name!r} {spec.shape_text()} has a variable dimension {axis}: "
                    f"give its size with --shape {spec.name}=D1,D2,..."
                )
    if spec.shape and not isinstance(spec.shape[0], int):
        dims[0] = batch_size  # the batch axis follows --batch-size
    return tuple(dims)


def _random(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> Array:
    import numpy as np

    target = numpy_dtype(dtype)
    if dtype == "string":
        return np.full(shape, "a", dtype=object)
    if target.kind == "f":
        return rng.standard_normal(shape).astype(target)
    if target.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 10, shape).astype(target)  # small: indices stay in range
