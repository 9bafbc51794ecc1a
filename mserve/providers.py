"""onnxruntime execution providers, named one way for every command: a short name (``cpu``,
``cuda``, ``tensorrt``, ...) or onnxruntime's own (``CUDAExecutionProvider``).

A list of them is an order of preference: those the installed onnxruntime offers are used in
that order (onnxruntime runs what the first cannot on the next), those it does not are skipped
with a warning, and a list of which it offers none is an error that says what it does offer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .errors import EnvironmentProblem, UsageError

log = logging.getLogger("mserve")
SHORT = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "cann": "CANNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "azure": "AzureExecutionProvider",
}
DEFAULT = ("cpu",)


def full_name(name: str) -> str:
    """onnxruntime's name for NAME; an unknown one is a usage error."""
    full = SHORT.get(name.lower(), name)
    if not full.endswith("ExecutionProvider"):
        raise UsageError(f"unknown provider {name!r} (known: {', '.join(SHORT)})")
    return full


def short_name(full: str) -> str:
    return next((short for short, name in SHORT.items() if name == full), full)


def offered() -> list[str]:
    """The providers the installed onnxruntime offers, by short name."""
    import onnxruntime as ort

    return [short_name(name) for name in ort.get_available_providers()]


def choose(names: Iterable[str]) -> list[str]:
    """The providers to give onnxruntime for NAMES (in order; ``cpu`` when none is named)."""
    import onnxruntime as ort

    wanted = [full_name(name) for name in names] or [full_name(n) for n in DEFAULT]
    available = set(ort.get_available_providers())
    chosen = [name for name in dict.fromkeys(wanted) if name in available]
    if not chosen:
        asked = ", ".join(short_name(name) for name in wanted)
        raise EnvironmentProblem(
            f"this onnxruntime offers none of the providers asked for ({asked}); it offers "
            f"{', '.join(offered())} (CUDA and TensorRT need onnxruntime-gpu, OpenVINO "
            "onnxruntime-openvino)"
        )
    skipped = [short_name(name) for name in wanted if name not in available]
    if skipped:
        log.warning(
            "provider %s not in this onnxruntime; using %s",
            ", ".join(skipped),
            ", ".join(short_name(name) for name in chosen),
        )
    return chosen
