"""mserve: export models to ONNX with verified parity, version them in a repository, serve them.

``import mserve`` stays light: the core imports numpy and onnx only when used, and
``mserve.export`` (``mserve.converters.export.export``) loads the converters on first use, so
the server never pulls them in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .converters.export import ExportResult, export

__all__ = ["ExportResult", "export"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("mserve.converters.export"), name)
    raise AttributeError(f"module 'mserve' has no attribute {name!r}")
