"""Source model -> ONNX -> parity check -> the next version in the repository, or nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mserve import inputs, onnx_files
from mserve.errors import (
    ConversionError,
    ParityError,
    UntrustedSourceError,
    UsageError,
    foreign_message,
)
from mserve.manifest import (
    MODEL_FILE,
    SAMPLE_INPUTS,
    SAMPLE_OUTPUTS,
    Manifest,
    ci_provenance,
    sha256_file,
    sha256_tree,
)
from mserve.parity import Tolerance, compare_outputs
from mserve.reference import check_model_name
from mserve.runtime import ModelRunner, create_session, max_opset
from mserve.signature import Signature
from mserve.stores import open_repository

from .registry import (
    Conversion,
    Converter,
    by_name,
    for_file,
    for_object,
    package_version,
)


@dataclass
class ExportResult:
    manifest: Manifest
    location: str  # the version's folder, or its URL on an object store
    notes: list[str] = field(default_factory=list)

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def path(self) -> Path:
        """The version's folder (a repository in a folder only)."""
        if "://" in self.location:
            raise UsageError(f"{self.location} is on an object store, not in a folder")
        return Path(self.location)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.manifest.model,
            "version": self.manifest.version,
            "path": self.location,
            "parity": self.manifest.parity,
            "notes": self.notes,
        }


def export(
    source: Any = None,
    *,
    name: str,
    repo: str | os.PathLike[str] = "models",
    sample: Any = None,
    framework: str | None = None,
    trust_source: bool = False,
    tolerance: Tolerance | None = None,
    from_python: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    signature: str | None = None,
) -> ExportResult:
    """Convert a model and publish it as the next version of ``name``, or raise and publish nothing.

    The model is ``source`` (a file, a SavedModel directory, or an in-process model) or what
    ``from_python`` ("package.module:function") builds; ``weights`` then loads a PyTorch state
    dict into it. ``sample`` (a .npy/.npz/.json/.csv path, arrays, or a DataFrame) fixes the input
    types, and the source model and the ONNX model are compared on it: ParityError when they
    disagree beyond ``tolerance``. ``signature`` picks a SavedModel signature.
    """
    check_model_name(name)
    tolerance = tolerance or Tolerance()
    repository = open_repository(repo)
    model, converter, source_record, notes = _source_model(
        source, from_python, framework, trust_source
    )
    if weights is not None:
        load_weights = getattr(converter, "load_weights", None)
        if load_weights is None:
            raise UsageError(f"--weights applies to PyTorch models, not {converter.name} ones")
        model = load_weights(model, Path(weights))
        source_record["weights"] = {
            "file": Path(weights).name,
            "sha256": sha256_file(Path(weights)),
        }
    conversion = converter.convert(model, _sample_arrays(sample), {"signature": signature})
    tolerance.check_outputs([output.name for output in conversion.model.graph.output])
    notes += conversion.notes
    if conversion.synthetic_sample:
        notes.append("no sample given: parity was checked on synthetic inputs; pass --sample")
    signature_, outputs = _check_onnx(conversion)
    parity = _parity(conversion, outputs, tolerance)
    if not parity.get("passed", True):
        raise ParityError(f"parity check failed, nothing published: {parity['summary']}")

    def write(staging: Path) -> Manifest:
        onnx_files.save(conversion.model, staging / MODEL_FILE)
        _write_samples(staging, conversion.feeds, outputs)
        return Manifest(
            model=name,
            version=0,  # allocated under the repository's lock
            signature=signature_,
            source={
                **conversion.source,
                **source_record,
                "mserve_version": package_version("mserve"),
            },
            onnx=_onnx_record(conversion.model),
            parity=parity,
            runtime={
                "onnxruntime": package_version("onnxruntime"),
                "onnxruntime_max_opset": str(max_opset()),
                "onnx": package_version("onnx"),
            },
            provenance=ci_provenance(),
        )

    manifest = repository.publish(name, write)
    return ExportResult(manifest, repository.version_location(name, manifest.version), notes)


def _source_model(
    source: Any, from_python: str | None, framework: str | None, trust_source: bool
) -> tuple[Any, Converter, dict[str, Any], list[str]]:
    """The model object, its converter, what to record about its origin, and notes."""
    if from_python is not None:
        if source is not None:
            raise UsageError("give a SOURCE or --from-python, not both")
        model = build_from_python(from_python)
        converter = by_name(framework) if framework else for_object(model)
        return model, converter, {"factory": from_python}, []
    if source is None:
        raise UsageError("give a SOURCE file or --from-python MODULE:FUNCTION")
    if not isinstance(source, str | os.PathLike):
        converter = by_name(framework) if framework else for_object(source)
        return source, converter, {}, []
    path = Path(source)
    if not path.exists():
        raise UsageError(f"source {path} does not exist")
    converter = by_name(framework) if framework else for_file(path)
    risk = converter.runs_code(path)
    if risk and not trust_source:
        why = risk if isinstance(risk, str) else "loading it runs code stored in it"
        raise UntrustedSourceError(
            f"{path.name}: {why}; pass --trust-source only if you trust where it came from"
        )
    model, notes = converter.load(path)
    record = {
        "file": path.name,
        "sha256": sha256_file(path) if path.is_file() else sha256_tree(path),
    }
    return model, converter, record, notes


def build_from_python(spec: str) -> Any:
    """Call ``package.module:function`` (importable from the working directory) for a model."""
    import importlib
    import sys

    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name.isidentifier():
        raise UsageError(
            f"--from-python {spec!r}: expected MODULE:FUNCTION, e.g. mypkg.models:build"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's own package
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--from-python: cannot import {module_name!r} ({exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UsageError(f"--from-python: {module_name} has no function {function_name!r}")
    try:
        return function()
    except Exception as exc:  # the user's code: report it, do not crash
        raise UsageError(f"--from-python: {spec}() failed: {foreign_message(exc)}") from None


def _sample_arrays(sample: Any) -> Any:
    if sample is None:
        return None
    if isinstance(sample, str | os.PathLike):
        return inputs.as_arrays(inputs.load_file(Path(sample)))
    return inputs.as_arrays(sample)


def _check_onnx(conversion: Conversion) -> tuple[Signature, dict[str, Any]]:
    """The converted model must pass the checker and load; returns its answers on the sample."""
    import onnx

    try:
        onnx.checker.check_model(conversion.model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(
            f"the converted model is not valid ONNX: {foreign_message(exc)}"
        ) from None
    opset = next(
        (o.version for o in conversion.model.opset_import if o.domain in ("", "ai.onnx")), 0
    )
    if opset > max_opset():
        raise ConversionError(
            f"the model uses ONNX opset {opset}, newer than onnxruntime "
            f"{package_version('onnxruntime')} supports ({max_opset()}); upgrade onnxruntime"
        )
    signature = Signature.from_onnx(conversion.model)
    runner = ModelRunner(create_session(conversion.model.SerializeToString()), signature)
    outputs = runner.run(conversion.feeds) if conversion.feeds else {}
    return signature, outputs


def _parity(
    conversion: Conversion, outputs: dict[str, Any], tolerance: Tolerance
) -> dict[str, Any]:
    if conversion.expected is None:
        return {"passed": True, "method": "none: the source is ONNX"}
    rows = len(next(iter(conversion.feeds.values())))
    report = compare_outputs(conversion.expected, outputs, tolerance, rows)
    return {
        **report.to_dict(tolerance),
        "synthetic_sample": conversion.synthetic_sample,
        "summary": report.summary(),
    }


def _write_samples(staging: Path, feeds: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Keep the sample and the ONNX answers, so `mserve validate` can re-run them later."""
    import numpy as np

    if not feeds or not all(isinstance(v, np.ndarray) for v in outputs.values()):
        return  # non-tensor outputs (sequences, maps) cannot be stored without pickle
    (staging / SAMPLE_INPUTS).parent.mkdir()
    np.savez(staging / SAMPLE_INPUTS, **{k: _storable(v) for k, v in feeds.items()})
    np.savez(staging / SAMPLE_OUTPUTS, **{k: _storable(v) for k, v in outputs.items()})


def _storable(array: Any) -> Any:
    # String tensors come back as object arrays, which .npz can only hold by pickling.
    return array.astype(str) if array.dtype == object else array


def _onnx_record(model: Any) -> dict[str, Any]:
    return {
        "ir_version": model.ir_version,
        "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
