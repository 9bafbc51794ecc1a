"""Source model -> ONNX -> parity check -> the next version in the repository, or nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mserve import inputs, onnx_files
from mserve.errors import ConversionError, ParityError, UntrustedSourceError, UsageError
from mserve.manifest import MODEL_FILE, Manifest, ci_provenance, sha256_file
from mserve.parity import Tolerance, compare
from mserve.reference import check_model_name
from mserve.repository import Repository
from mserve.runtime import ModelRunner, create_session
from mserve.signature import Signature
from mserve.validation import SAMPLE_INPUTS, SAMPLE_OUTPUTS

from .registry import Conversion, Converter, by_name, for_file, for_object, package_version


@dataclass
class ExportResult:
    manifest: Manifest
    path: Path
    notes: list[str] = field(default_factory=list)

    @property
    def version(self) -> int:
        return self.manifest.version

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.manifest.model,
            "version": self.manifest.version,
            "path": str(self.path),
            "parity": self.manifest.parity,
            "notes": self.notes,
        }


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
    """Convert ``source`` (a file path or an in-process model) and publish it as a new version.

    ``sample`` (a path to .npy/.npz/.json/.csv, or arrays) fixes the input types and is what the
    source model and the ONNX model are compared on. Raises ParityError, and publishes nothing,
    when they disagree beyond ``tolerance``.
    """
    check_model_name(name)
    tolerance = tolerance or Tolerance()
    repository = Repository(repo)
    source_record: dict[str, Any] = {}
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise UsageError(f"source {path} does not exist")
        converter = by_name(framework) if framework else for_file(path)
        _check_trust(converter, path, trust_source)
        model, notes = converter.load(path)
        source_record = {"file": path.name, "sha256": sha256_file(path)} if path.is_file() else {}
    else:
        converter = by_name(framework) if framework else for_object(source)
        model, notes = source, []
    conversion = converter.convert(model, _sample_arrays(sample))
    notes += conversion.notes
    if conversion.synthetic_sample:
        notes.append("no sample given: parity was checked on synthetic inputs; pass --sample")
    signature, outputs = _check_onnx(conversion)
    parity = _parity(conversion, outputs, tolerance)
    if not parity.get("passed", True):
        raise ParityError(f"parity check failed, nothing published: {parity['summary']}")

    def write(staging: Path) -> Manifest:
        onnx_files.save(conversion.model, staging / MODEL_FILE)
        _write_samples(staging, conversion.feeds, outputs)
        return Manifest(
            model=name,
            version=0,  # allocated under the repository's lock
            signature=signature,
            source={
                **conversion.source,
                **source_record,
                "mserve_version": package_version("mserve"),
            },
            onnx=_onnx_record(conversion.model),
            parity=parity,
            runtime={
                "onnxruntime": package_version("onnxruntime"),
                "onnx": package_version("onnx"),
            },
            provenance=ci_provenance(),
        )

    manifest = repository.publish(name, write)
    return ExportResult(manifest, repository.version_dir(name, manifest.version), notes)


def _check_trust(converter: Converter, path: Path, trust_source: bool) -> None:
    if converter.runs_code(path) and not trust_source:
        raise UntrustedSourceError(
            f"loading {path.name} runs code stored in it (pickle); "
            "pass --trust-source only if you trust where it came from"
        )


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
        first = str(exc).strip().splitlines()[0][:300]
        raise ConversionError(f"the converted model is not valid ONNX: {first}") from None
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
    report = compare(conversion.expected, outputs, tolerance, rows)
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
    (staging / "samples").mkdir()
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
