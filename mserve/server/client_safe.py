"""What a client may learn of a failure: nothing about the host.

A reply names models, versions and files relative to the repository, never an absolute path
or an exception's class; the full detail goes to the server's log. ``Redactor`` is the safety
net of both error edges (REST and gRPC); ``load_failure`` tells why a version cannot be served,
once for clients and once for the log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mserve.errors import MserveError
from mserve.manifest import MODEL_FILE

UNEXPECTED = "it cannot be loaded (an unexpected error; the server log has the details)"


class Redactor:
    """Takes the repository's location out of a message: ``<root>/m/1/model.onnx`` becomes
    ``m/1/model.onnx`` and the root itself ``<repository>``."""

    def __init__(self, root: Path) -> None:
        roots = {str(root.absolute()), str(root.resolve())}
        # Longest first, so a root that contains the other is replaced whole.
        self._roots = sorted((r for r in roots if r != os.sep), key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for root in self._roots:
            if root in message:
                message = message.replace(root + os.sep, "").replace(root, "<repository>")
        return message


@dataclass(frozen=True)
class LoadFailure:
    reason: str  # for replies: "model 'm' version 3: model.onnx is not a valid ONNX model"
    detail: str  # for the log
    expected: bool  # a file that is not what it should be; False: a bug, logged with its traceback


def load_failure(model: str, version: int, exc: BaseException, redact: Redactor) -> LoadFailure:
    """Why MODEL:VERSION cannot be served, for clients and for the log."""
    expected = True
    if isinstance(exc, MserveError):
        # Messages of the repository and the loader may start with "m:3: " themselves.
        reason = exc.message.removeprefix(f"{model}:{version}: ")
    elif isinstance(exc, OSError):
        name = redact(os.fsdecode(exc.filename)) if exc.filename else "a file"
        reason = f"{name} cannot be read ({exc.strerror or 'I/O error'})"
    elif _is_protobuf_decode_error(exc):
        reason = f"{MODEL_FILE} is not a valid ONNX model"
    else:
        reason, expected = UNEXPECTED, False
    detail = f"{exc}" if isinstance(exc, MserveError) else f"{type(exc).__name__}: {exc}"
    return LoadFailure(f"model '{model}' version {version}: {redact(reason)}", detail, expected)


def _is_protobuf_decode_error(exc: BaseException) -> bool:
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    return isinstance(exc, DecodeError)
