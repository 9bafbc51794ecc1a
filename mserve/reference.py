"""Model names and references: ``MODEL``, ``MODEL:VERSION`` and ``MODEL@LABEL``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
LABEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
VERSION = re.compile(r"[1-9][0-9]{0,17}")


def check_model_name(name: str) -> str:
    # ".." passes the character class but must never become a path component.
    if not MODEL_NAME.fullmatch(name) or name in {".", ".."}:
        raise UsageError(
            f"invalid model name {name!r}: use 1-64 characters a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


def check_label(label: str) -> str:
    if not LABEL_NAME.fullmatch(label):
        raise UsageError(
            f"invalid label {label!r}: use 1-32 characters a-z 0-9 _ -, starting with a letter"
        )
    return label


def parse_version(text: str) -> int:
    if not VERSION.fullmatch(text):
        raise UsageError(f"invalid version {text!r}: use a positive integer without leading zeros")
    return int(text)


@dataclass(frozen=True)
class Reference:
    """What a user wrote to name a version; resolved against a repository later."""

    model: str
    version: int | None = None
    label: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if "@" in text:
            model, label = text.split("@", 1)
            return cls(check_model_name(model), label=check_label(label))
        if ":" in text:
            model, version = text.split(":", 1)
            return cls(check_model_name(model), version=parse_version(version))
        return cls(check_model_name(text))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.model}:{self.version}"
        if self.label is not None:
            return f"{self.model}@{self.label}"
        return self.model
