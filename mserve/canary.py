"""A canary: one label's requests split between the version it names (the baseline) and a
candidate, kept with the label in ``model.json``, so every replica splits the same way.

    "canary": {"id": "20261202T131500-3", "label": "stable", "baseline": 2, "candidate": 3,
               "weight": 10.0, "header": "x-user-id", "shadow": true, "tolerance": 0.0001}

``weight`` is the percentage of the label's requests the candidate answers: by a hash of the
named ``header`` when a request carries it (the same value always reaches the same version, on
any replica), else at random. With ``shadow`` the candidate also gets a copy of each request the
baseline answers, off the request path; its answer is dropped and compared with the baseline's
(equal labels, largest absolute difference within ``tolerance``). A model has at most one
canary; it ends by a promote (the label moves to the candidate) or an abort.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import UsageError
from .reference import check_label

HEADER = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # a header / gRPC metadata name, lower case
DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Canary:
    id: str
    label: str
    baseline: int
    candidate: int
    weight: float  # percent of the label's requests
    header: str | None = None
    shadow: bool = False
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        check_label(self.label)
        check_weight(self.weight, shadow=self.shadow)
        if self.header is not None:
            check_header(self.header)
        check_tolerance(self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Canary:
        header = data.get("header")
        return cls(
            id=str(data["id"]),
            label=str(data["label"]),
            baseline=int(data["baseline"]),
            candidate=int(data["candidate"]),
            weight=float(data["weight"]),
            header=None if header is None else str(header),
            shadow=bool(data.get("shadow", False)),
            tolerance=float(data.get("tolerance", DEFAULT_TOLERANCE)),
        )

    def sticky_share(self, value: bytes) -> float:
        """Where a header value falls in [0, 1): the same on every replica, and salted by the
        canary, so each canary draws its own users."""
        digest = hashlib.blake2b(value, digest_size=8, key=self.id.encode()[:64]).digest()
        return int.from_bytes(digest, "big") / 2**64

    def describe(self) -> str:
        how = [f"{self.weight:g}% of '{self.label}' to {self.candidate}"]
        if self.header:
            how.append(f"sticky on {self.header}")
        if self.shadow:
            how.append(f"shadowing {self.baseline}")
        return ", ".join(how)


def check_weight(weight: float, *, shadow: bool) -> float:
    if not (math.isfinite(weight) and 0 <= weight <= 100):
        raise UsageError("a canary's weight is a percentage, from 0 to 100")
    if weight == 0 and not shadow:
        raise UsageError("a canary of weight 0 answers nothing: give it a weight, or shadow")
    return weight


def check_header(name: str) -> str:
    if not HEADER.fullmatch(name):
        raise UsageError(
            "a sticky header is a header name in lower case (letters, digits, '-'), "
            "at most 64 characters"
        )
    return name


def check_tolerance(tolerance: float) -> float:
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise UsageError("a shadow tolerance is a number of at least 0")
    return tolerance
