"""Is a published version sound? Every check runs and reports, so one call shows every problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import onnx_files
from .confined import MissingFile, UnsafeFile
from .errors import MserveError, ValidationError, foreign_message
from .manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    SAMPLE_INPUTS,
    SAMPLE_OUTPUTS,
    Manifest,
)
from .parity import Tolerance, compare_outputs
from .repository import LocalRepository, Repository
from .runtime import ModelRunner, check_feedable, create_session
from .signature import CompatibilityReport, Signature, compare_signatures
from .verified import VerifiedModel, open_model, read_verified


@dataclass
class ValidationCheck:
    name: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class ValidationReport:
    model: str
    version: int
    checks: list[ValidationCheck] = field(default_factory=list)
    against: str | None = None
    compatibility: CompatibilityReport | None = None

    @property
    def passed(self) -> bool:
        valid = all(c.passed for c in self.checks)
        return valid and (self.compatibility is None or self.compatibility.compatible)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "valid": all(c.passed for c in self.checks),
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
        }
        if self.compatibility is not None:
            data["against"] = self.against
            data["compatibility"] = self.compatibility.to_dict()
        return data


class _Checks:
    """Collects check results; a check that raises an MserveError fails with its message."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report

    def run(self, name: str, check: Any) -> Any:
        try:
            result = check()
        except MserveError as exc:
            self.report.checks.append(ValidationCheck(name, False, exc.message))
            return None
        except Exception as exc:  # onnx and onnxruntime raise many unrelated exception types
            self.report.checks.append(ValidationCheck(name, False, foreign_message(exc)))
            return None
        detail = result if isinstance(result, str) else ""
        self.report.checks.append(ValidationCheck(name, True, detail))
        return result if result is not None else True


def validate(
    repo: Repository, model: str, version: int, against: tuple[str, int] | None = None
) -> ValidationReport:
    report = ValidationReport(model, version)
    checks = _Checks(report)
    manifest: Manifest | None = checks.run(
        "manifest", lambda: _check_manifest(repo, model, version)
    )
    checks.run("files", lambda: _check_files(repo, model, version, manifest))
    # The model as the server opens it: every byte confined and matched against the manifest.
    opened: VerifiedModel | None = None
    if manifest is not None:
        opened = checks.run("external data", lambda: open_model(repo, model, version, manifest)[1])
    if opened is not None:
        checks.run("onnx checker", lambda: _check_onnx(repo, model, version, opened))
        checks.run("shape inference", lambda: _infer_shapes(opened.model))
        session = checks.run("onnxruntime session", lambda: create_session(opened))
        signature = Signature.from_onnx(opened.model)
        feedable = checks.run("tensor types", lambda: check_feedable(signature))
        if manifest is not None:
            checks.run("signature", lambda: _check_signature(signature, manifest.signature))
            if session is not None and feedable and SAMPLE_INPUTS in manifest.files:
                runner = ModelRunner(session, signature)
                checks.run(
                    "samples", lambda: _check_samples(repo, model, version, runner, manifest)
                )
    if against is not None:
        report.against = f"{against[0]}:{against[1]}"
        old = repo.manifest(*against).signature
        new = (
            manifest.signature
            if manifest
            else Signature.from_onnx(opened.model)
            if opened
            else None
        )
        if new is not None:
            report.compatibility = compare_signatures(old, new)
    return report


def _check_manifest(repo: Repository, model: str, version: int) -> Manifest:
    manifest = repo.manifest(model, version)
    if (manifest.model, manifest.version) != (model, version):
        raise MserveError(
            f"manifest names {manifest.model}:{manifest.version}, not {model}:{version}"
        )
    return manifest


def _check_files(repo: Repository, model: str, version: int, manifest: Manifest | None) -> str:
    if manifest is None:
        raise MserveError("no manifest to check the files against")
    if MODEL_FILE not in manifest.files:
        raise MserveError(f"the manifest does not list {MODEL_FILE}")
    problems = []
    for relative in manifest.files:
        try:
            read_verified(repo, model, version, relative, manifest)
        except MissingFile:
            problems.append(f"{relative} is missing")
        except UnsafeFile as exc:
            problems.append(exc.message.removeprefix(f"{model}:{version}: "))
        except ValidationError:
            problems.append(f"{relative} was modified (sha256 differs)")
    for relative in repo.files(model, version):
        if relative != MANIFEST_FILE and relative not in manifest.files:
            problems.append(f"{relative} is not in the manifest")
    if problems:
        raise MserveError("; ".join(problems))
    return f"{len(manifest.files)} file(s) match their sha256"


def _check_onnx(repo: Repository, model: str, version: int, opened: VerifiedModel) -> str:
    """onnx's full check, on the verified bytes when they fit in one message (below 2 GiB)."""
    import onnx

    whole = onnx.ModelProto()
    whole.CopyFrom(opened.model)
    onnx_files.embed(whole, opened.files)
    if whole.ByteSize() < onnx_files.EMBED_LIMIT_BYTES:
        onnx.checker.check_model(whole, full_check=True)
    elif isinstance(repo, LocalRepository):  # too large for one message: onnx's checker
        path = repo.version_file(model, version, MODEL_FILE)  # reads the files (checked above)
        onnx.checker.check_model(str(path), full_check=True)
    else:
        return "skipped: over 2 GiB, the full check needs the version in a folder"
    return "full check passed"


def _infer_shapes(model: Any) -> str:
    import onnx

    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    return "strict mode passed"


def _check_signature(actual: Signature, recorded: Signature) -> None:
    if actual != recorded:
        raise MserveError("the ONNX graph's inputs/outputs differ from the manifest's signature")


def _check_samples(
    repo: Repository, model: str, version: int, runner: ModelRunner, manifest: Manifest
) -> str:
    inputs = repo.stored_arrays(model, version, SAMPLE_INPUTS) or {}
    expected = repo.stored_arrays(model, version, SAMPLE_OUTPUTS)
    if expected is None:
        raise MserveError(f"{SAMPLE_OUTPUTS} is missing")
    tolerance = Tolerance.from_parity(manifest.parity)
    rows = len(next(iter(inputs.values()))) if inputs else 0
    result = compare_outputs(expected, runner.run(inputs), tolerance, rows)
    if not result.passed:
        raise MserveError(f"stored samples: {result.summary()}")
    return result.summary()
