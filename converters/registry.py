"""How converters plug in: each one is an entry point in the ``mserve.converters`` group.

mserve's own converters register exactly as a third-party package would, in its
``pyproject.toml``; a converter module imports its framework only when it is used.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mserve.errors import EnvironmentProblem, MissingExtraError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import onnx

ENTRY_POINT_GROUP = "mserve.converters"


@dataclass
class Conversion:
    """A converted model, the sample as ONNX inputs, and the source model's own answers."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray[Any, Any]]
    expected: dict[str, np.ndarray[Any, Any]] | None  # keyed by ONNX output name; None: no source
    source: dict[str, Any]  # framework, framework_version, converter, converter_version
    synthetic_sample: bool = False
    notes: list[str] = field(default_factory=list)


class Converter(Protocol):
    name: str

    def runs_code(self, path: Path) -> str:
        """Why loading or running ``path`` could execute code stored in it or touch files (it
        then needs --trust-source), e.g. "loading a pickle runs code stored in it"; "" when
        it cannot. A format is trust-free only if neither loading nor running it can."""

    def detect(self, path: Path) -> bool:
        """Whether ``path`` looks like this converter's source format."""

    def accepts(self, obj: Any) -> bool:
        """Whether an in-process object is a model of this framework."""

    def load(self, path: Path) -> tuple[Any, list[str]]:
        """Load a source file (its safety was checked by the caller); also notes for the user."""

    def convert(self, model: Any, sample: Any, options: Mapping[str, Any]) -> Conversion:
        """Convert ``model``; ``sample`` (arrays, a Table, or None) fixes input types and drives
        parity; ``options`` holds framework-specific choices (e.g. a SavedModel ``signature``)."""


@cache
def converters() -> dict[str, Converter]:
    found: dict[str, Converter] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name] = entry.load()
    return found


def by_name(name: str) -> Converter:
    available = converters()
    if name not in available:
        raise UsageError(f"unknown framework {name!r}; available: {', '.join(sorted(available))}")
    return available[name]


def for_file(path: Path) -> Converter:
    for converter in converters().values():
        if converter.detect(path):
            return converter
    raise UsageError(
        f"cannot tell which framework {path.name} comes from; pass --framework "
        f"({', '.join(sorted(converters()))})"
    )


def for_object(obj: Any) -> Converter:
    for converter in converters().values():
        if converter.accepts(obj):
            return converter
    raise UsageError(f"no converter accepts objects of type {type(obj).__qualname__}")


def package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


def require(module: str, extra: str, distribution: str = "", minimum: str = "") -> Any:
    """Import an optional framework, or say exactly how to install (or upgrade) it."""
    import importlib

    from packaging.version import InvalidVersion, Version

    top_level = module.split(".", maxsplit=1)[0]
    try:
        imported = importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(top_level, extra) from None
    if minimum:
        installed = package_version(distribution or top_level)
        try:
            too_old = Version(installed) < Version(minimum)
        except InvalidVersion:
            too_old = False
        if too_old:
            raise EnvironmentProblem(
                f"{distribution or top_level} {installed} is too old (mserve needs >= {minimum}); "
                f"upgrade with: pip install -U 'mserve[{extra}]'"
            )
    return imported


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Keep what native code writes straight to file descriptor 2 (absl's start-up notices,
    which no Python redirection sees) off the terminal; replayed if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Run a framework's converter without its chatter reaching our stdout (which may be JSON).

    Exporters print progress and raise warnings (which the test suite turns into errors); what
    they print is kept in the yielded buffer, and their warnings are dropped.
    """
    buffer = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(buffer),
        contextlib.redirect_stderr(buffer),
    ):
        warnings.simplefilter("ignore")
        yield buffer
