from __future__ import annotations

import numpy as np

from mserve.parity import Tolerance, compare_outputs


def test_close_outputs_pass_and_report_figures() -> None:
    expected = {"p": np.array([[0.5, 0.5], [1.0, 0.0]])}
    actual = {"p": np.array([[0.50001, 0.49999], [1.0, 0.0]], dtype=np.float32)}
    report = compare_outputs(expected, actual, Tolerance(), rows=2)
    assert report.passed
    figures = report.outputs[0]
    assert figures.mismatches == 0
    assert 0 < figures.max_abs_diff < 2e-5


def test_the_worst_element_is_named() -> None:
    expected = {"y": np.array([1.0, 2.0, 3.0])}
    actual = {"y": np.array([1.0, 2.5, 3.0001])}
    report = compare_outputs(expected, actual, Tolerance(atol=1e-3, rtol=0), rows=3)
    assert not report.passed
    assert report.summary() == (
        "output 'y' disagrees: max abs diff 0.5 (atol 0.001, rtol 0); at [1]: expected 2, got 2.5"
        " (abs diff 0.5, rel 0.25; allowed 0.001)"
    )


def test_per_output_tolerance_overrides_the_default() -> None:
    expected = {"a": np.array([1.0]), "b": np.array([1.0])}
    actual = {"a": np.array([1.01]), "b": np.array([1.01])}
    tolerance = Tolerance(atol=1e-4, rtol=0, per_output={"b": (0.1, None)})
    report = compare_outputs(expected, actual, tolerance, rows=1)
    assert [o.passed for o in report.outputs] == [False, True]


def test_labels_compare_exactly_and_trailing_unit_axes_are_ignored() -> None:
    report = compare_outputs(
        {"label": np.array(["a", "b", "c"]), "v": np.array([1.0, 2.0])},
        {"label": np.array(["a", "x", "c"], dtype=object), "v": np.array([[1.0], [2.0]])},
        Tolerance(),
        rows=3,
    )
    label, value = report.outputs
    assert (label.passed, label.mismatches, label.worst) == (
        False,
        1,
        "at [1]: expected 'b', got 'x'",
    )
    assert value.passed


def test_shape_mismatch_and_missing_output_fail() -> None:
    report = compare_outputs(
        {"a": np.zeros((2, 3)), "b": np.zeros(2)}, {"a": np.zeros((2, 2))}, Tolerance(), rows=2
    )
    assert [o.worst for o in report.outputs] == ["shape [2, 2] instead of [2, 3]", "missing"]


def test_nan_agrees_with_nan_but_not_with_a_number() -> None:
    ok = compare_outputs(
        {"y": np.array([np.nan, 1.0])}, {"y": np.array([np.nan, 1.0])}, Tolerance(), 2
    )
    bad = compare_outputs(
        {"y": np.array([np.nan, 1.0])}, {"y": np.array([0.0, 1.0])}, Tolerance(), 2
    )
    assert ok.passed and not bad.passed


def test_tolerance_round_trips_through_the_manifest_record() -> None:
    tolerance = Tolerance(atol=1e-3, rtol=1e-2, per_output={"y": (0.5, None)})
    report = compare_outputs({"y": np.array([1.0])}, {"y": np.array([1.0])}, tolerance, rows=1)
    assert Tolerance.from_parity(report.to_dict(tolerance)).for_output("y") == (0.5, 1e-2)


def test_a_failure_prints_digits_enough_to_tell_the_two_numbers_apart() -> None:
    expected = np.array([[1.0, -18.4865]], dtype=np.float32)
    actual = expected.copy()
    actual[0, 1] = np.nextafter(actual[0, 1], np.float32(0))  # one float32 step away
    report = compare_outputs({"y": expected}, {"y": actual}, Tolerance(atol=0, rtol=0), rows=1)
    worst = report.failures()[0].worst
    assert worst.startswith("at [0, 1]: expected -18.4865, got -18.486498 ")
    assert "abs diff 1.91e-06, rel 1.03e-07; allowed 0" in worst
    assert "at [0, 1]: expected -18.4865, got -18.486498" in report.summary()
