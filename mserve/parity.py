"""Numerical agreement between two sets of outputs (source model vs ONNX, or stored samples)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


@dataclass(frozen=True)
class Tolerance:
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    per_output: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def from_parity(cls, parity: dict[str, Any]) -> Tolerance:
        """The tolerances a manifest's parity record was checked with."""
        outputs = parity.get("outputs", {})
        return cls(
            float(parity.get("atol", DEFAULT_ATOL)),
            float(parity.get("rtol", DEFAULT_RTOL)),
            {name: (o.get("atol"), o.get("rtol")) for name, o in outputs.items()},
        )

    def check_outputs(self, outputs: Sequence[str]) -> None:
        """Refuse a tolerance for an output the model does not have (a typo would go unused)."""
        for name, (atol, _) in sorted(self.per_output.items()):
            if name not in outputs:
                option = "--atol" if atol is not None else "--rtol"
                raise UsageError(
                    f"{option} names output {name!r}, which the model does not have; "
                    f"its outputs: {', '.join(outputs)}"
                )

    def for_output(self, name: str) -> tuple[float, float]:
        atol, rtol = self.per_output.get(name, (None, None))
        return (self.atol if atol is None else atol, self.rtol if rtol is None else rtol)


@dataclass
class OutputParity:
    name: str
    passed: bool
    atol: float
    rtol: float
    elements: int
    mismatches: int
    max_abs_diff: float | None = None  # None for exact (label, string) outputs
    max_rel_diff: float | None = None
    worst: str = ""  # where the largest difference is, and the two values

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


@dataclass
class ParityReport:
    outputs: list[OutputParity]
    rows: int

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def failures(self) -> list[OutputParity]:
        return [o for o in self.outputs if not o.passed]

    def summary(self) -> str:
        failed = self.failures()
        if not failed:
            return f"all {len(self.outputs)} output(s) agree on {self.rows} row(s)"
        first = failed[0]
        if first.max_abs_diff is None:
            detail = f"{first.mismatches} of {first.elements} values differ; {first.worst}"
        else:
            detail = (
                f"max abs diff {first.max_abs_diff:.3g} "
                f"(atol {first.atol:g}, rtol {first.rtol:g}); {first.worst}"
            )
        return f"output {first.name!r} disagrees: {detail}"

    def to_dict(self, tolerance: Tolerance) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "atol": tolerance.atol,
            "rtol": tolerance.rtol,
            "rows": self.rows,
            "outputs": {o.name: o.to_dict() for o in self.outputs},
        }


def compare_outputs(
    expected: dict[str, Any], actual: dict[str, Any], tolerance: Tolerance, rows: int
) -> ParityReport:
    """Compare every expected output with the actual one of the same name."""
    report = ParityReport([], rows)
    for name, want in expected.items():
        atol, rtol = tolerance.for_output(name)
        if name not in actual:
            report.outputs.append(OutputParity(name, False, atol, rtol, 0, 0, worst="missing"))
            continue
        report.outputs.append(_compare_one(name, want, actual[name], atol, rtol))
    return report


def _compare_one(name: str, want: Any, got: Any, atol: float, rtol: float) -> OutputParity:
    import numpy as np

    expected, actual = np.asarray(want), np.asarray(got)
    if expected.size == actual.size and expected.shape != actual.shape:
        # (N,) against (N, 1): the same values; frameworks disagree on trailing unit axes.
        actual = actual.reshape(expected.shape)
    if expected.shape != actual.shape:
        return OutputParity(
            name,
            False,
            atol,
            rtol,
            int(expected.size),
            int(expected.size),
            worst=f"shape {list(actual.shape)} instead of {list(expected.shape)}",
        )
    if expected.dtype.kind not in "f" and actual.dtype.kind not in "f":
        return _compare_exact(name, expected, actual, atol, rtol)
    expected64, actual64 = expected.astype(np.float64), actual.astype(np.float64)
    close = np.isclose(actual64, expected64, atol=atol, rtol=rtol, equal_nan=True)
    with np.errstate(invalid="ignore"):
        diff = np.abs(actual64 - expected64)
        diff = np.where(np.isnan(expected64) & np.isnan(actual64), 0.0, diff)
        rel = diff / np.maximum(np.abs(expected64), np.finfo(np.float64).tiny)
    max_abs = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
    max_rel = float(np.nanmax(rel, initial=0.0)) if rel.size else 0.0
    worst = ""
    if diff.size:
        # The largest failing difference (NaN against a number counts as largest), else the largest.
        pool = np.where(~close, diff, -1.0) if not close.all() else np.nan_to_num(diff, nan=-1.0)
        index = np.unravel_index(int(np.argmax(pool)), diff.shape)
        allowed = atol + rtol * abs(expected64[index])
        worst = (
            f"at {list(map(int, index))}: expected {_shortest(expected[index])}, "
            f"got {_shortest(actual[index])}"
        )
        if np.isfinite(diff[index]) and np.isfinite(allowed):
            worst += f" (abs diff {diff[index]:.3g}, rel {rel[index]:.3g}; allowed {allowed:.3g})"
    return OutputParity(
        name,
        bool(close.all()),
        atol,
        rtol,
        int(expected.size),
        int((~close).sum()),
        max_abs,
        max_rel,
        worst,
    )


def _shortest(value: Any) -> str:
    """The fewest digits that tell this value apart from every other of its dtype: two
    different numbers never print alike (``.6g`` showed -18.4865 for both of two)."""
    import numpy as np

    if not isinstance(value, np.floating):
        return repr(value.item() if hasattr(value, "item") else value)
    magnitude = abs(float(value))
    if magnitude == 0 or 1e-4 <= magnitude < 1e16 or not np.isfinite(value):
        return np.format_float_positional(value, unique=True, trim="-")
    return np.format_float_scientific(value, unique=True, trim="-")


def _compare_exact(
    name: str,
    expected: np.ndarray[Any, Any],
    actual: np.ndarray[Any, Any],
    atol: float,
    rtol: float,
) -> OutputParity:
    import numpy as np

    same = np.asarray(expected.astype(str) == actual.astype(str))
    worst = ""
    if not same.all():
        index = tuple(int(i) for i in np.argwhere(~same)[0])
        want, got = np.asarray(expected[index]).item(), np.asarray(actual[index]).item()
        worst = f"at {list(index)}: expected {want!r}, got {got!r}"
    return OutputParity(
        name, bool(same.all()), atol, rtol, int(expected.size), int((~same).sum()), worst=worst
    )
