"""The per-version manifest: what a version is, where it came from, and how it was checked.

This module owns the layout of a version directory; every other module names its files through
the constants below (``Repository.version_file`` joins them, confined to the version)::

    <repo>/<model>/<version>/model.onnx            MODEL_FILE (and model.onnx.data, if large)
    <repo>/<model>/<version>/manifest.json         MANIFEST_FILE
    <repo>/<model>/<version>/samples/inputs.npz    SAMPLE_INPUTS: the export's sample
    <repo>/<model>/<version>/samples/outputs.npz   SAMPLE_OUTPUTS: the ONNX model's answers
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import RepositoryError
from .signature import Signature

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
SAMPLES_DIR = "samples"
SAMPLE_INPUTS = f"{SAMPLES_DIR}/inputs.npz"
SAMPLE_OUTPUTS = f"{SAMPLES_DIR}/outputs.npz"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    model: str
    version: int
    signature: Signature
    source: dict[str, Any]  # framework, framework_version, converter, converter_version, sha256
    onnx: dict[str, Any]  # ir_version, opset {domain: version}, producer
    parity: dict[str, Any]  # passed, atol, rtol, rows, outputs {name: figures}
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    runtime: dict[str, str] = field(default_factory=dict)  # versions used for checking
    provenance: dict[str, str] = field(default_factory=dict)  # CI commit, job
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at,
            "signature": self.signature.to_dict(),
            "source": self.source,
            "onnx": self.onnx,
            "runtime": self.runtime,
            "parity": self.parity,
            "files": self.files,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            signature=Signature.from_dict(data["signature"]),
            source=dict(data.get("source", {})),
            onnx=dict(data.get("onnx", {})),
            parity=dict(data.get("parity", {})),
            files=dict(data.get("files", {})),
            runtime=dict(data.get("runtime", {})),
            provenance=dict(data.get("provenance", {})),
            created_at=str(data.get("created_at", "")),
        )

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """A manifest from the bytes of ``manifest.json`` (read by ``Repository.manifest``,
        confined); ``where`` names the version in messages, which name no host path (server
        replies show them)."""
        place = f"{where}: {MANIFEST_FILE}"
        try:
            return cls.from_dict(json.loads(data.decode("utf-8")))
        except UnicodeDecodeError:
            raise RepositoryError(f"{place} is unreadable (not UTF-8)") from None
        except json.JSONDecodeError as exc:
            raise RepositoryError(f"{place} is unreadable (not JSON: {exc})") from None
        except KeyError as exc:
            raise RepositoryError(f"{place} is unreadable (it lacks the field {exc})") from None
        except (ValueError, TypeError, AttributeError):
            raise RepositoryError(f"{place} is unreadable (a field has the wrong type)") from None

    def write(self, version_dir: Path) -> None:
        write_json(version_dir / MANIFEST_FILE, self.to_dict())


def write_json(path: Path, data: Any) -> None:
    """Write JSON and fsync it, so a rename that follows publishes complete content."""
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """One digest for a directory (a SavedModel): every file's relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


# (variable holding the commit, variable holding the job URL or ID, CI system name)
_CI_SYSTEMS: tuple[tuple[str, str, str], ...] = (
    ("GITHUB_SHA", "GITHUB_RUN_ID", "github-actions"),
    ("CI_COMMIT_SHA", "CI_JOB_URL", "gitlab-ci"),
    ("BUILDKITE_COMMIT", "BUILDKITE_BUILD_URL", "buildkite"),
    ("CIRCLE_SHA1", "CIRCLE_BUILD_URL", "circleci"),
    ("GIT_COMMIT", "BUILD_URL", "jenkins"),
)


def ci_provenance(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Commit and job of the CI run doing the export, from the variables common CI systems set."""
    env = dict(os.environ) if environ is None else environ
    for commit_var, job_var, system in _CI_SYSTEMS:
        if commit_var not in env and job_var not in env:
            continue
        found = {"ci": system}
        if env.get(commit_var):
            found["git_commit"] = env[commit_var]
        job = env.get(job_var, "")
        if system == "github-actions" and job:
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            found["ci_job_id"] = job
            if env.get("GITHUB_REPOSITORY"):
                job = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{job}"
        if job:
            found["ci_job_url" if "://" in job else "ci_job_id"] = job
        return found
    if env.get("MSERVE_GIT_COMMIT"):
        return {"git_commit": env["MSERVE_GIT_COMMIT"]}
    return {}
