"""mserve: export models to ONNX with verified parity, version them in a repository, serve them.

``import mserve`` stays light: the core imports numpy and onnx only when used, and
``mserve.export`` loads the converters on first use, so the server never pulls them in.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .converters.export import ExportResult
    from .parity import Tolerance

__all__ = ["export"]


def export(
    source: Any,
    *,
    name: str,
    repo: str | os.PathLike[str] = "models",
    sample: Any = None,
    framework: str | None = None,
    trust_source: bool = False,
    tolerance: Tolerance | None = None,
) -> ExportResult:
    """Convert a model (object or file), check parity on ``sample``, publish the next version.

    >>> mserve.export(pipeline, name="iris", repo="models", sample=X_test)  # doctest: +SKIP
    """
    from .converters.export import export as export_model

    return export_model(
        source,
        name=name,
        repo=repo,
        sample=sample,
        framework=framework,
        trust_source=trust_source,
        tolerance=tolerance,
    )
