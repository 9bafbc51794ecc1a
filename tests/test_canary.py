"""Canaries in the repository (start, promote, abort and the changes they refuse), the shadow
comparison, and the figures and verdict read from replicas' metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mserve.canary import Canary
from mserve.canary_report import Figures, Gates, Latency, Side, add_replica, judge
from mserve.errors import Conflict, NotFoundError, UsageError
from mserve.lifecycle import Lifecycle, previous_version
from mserve.repository import LocalRepository
from mserve.server.canary import compare
from tests.conftest import Cli, one_line_error

ACTOR = "tester"


def test_a_canary_splits_a_label_until_it_is_promoted_or_aborted(repo3: Path) -> None:
    repository = LocalRepository(repo3)
    lifecycle = Lifecycle(repository)
    lifecycle.promote("iris", 1, actor=ACTOR)
    with pytest.raises(NotFoundError, match="no label 'beta'"):
        lifecycle.canary("iris", 2, label="beta", actor=ACTOR)
    with pytest.raises(Conflict, match="already names version 1"):
        lifecycle.canary("iris", 1, actor=ACTOR)
    with pytest.raises(Conflict, match="breaks clients"):  # iris:3 takes 3 features
        lifecycle.canary("iris", 3, actor=ACTOR)

    started = lifecycle.canary("iris", 2, weight=25, header="X-User", shadow=True, actor=ACTOR)
    canary = repository.state("iris").canary
    assert canary is not None
    assert (canary.label, canary.baseline, canary.candidate) == ("stable", 1, 2)
    assert (canary.weight, canary.header, canary.shadow) == (25.0, "x-user", True)
    assert started.describe() == (
        "canary iris: 25% of 'stable' to 2, sticky on x-user, shadowing 1 (baseline 1)"
    )
    with pytest.raises(Conflict, match="is running"):
        lifecycle.canary("iris", 3, allow_breaking=True, actor=ACTOR)
    with pytest.raises(Conflict, match="promote or abort it first"):
        lifecycle.promote("iris", 2, actor=ACTOR)
    with pytest.raises(Conflict, match="promote or abort it first"):
        lifecycle.rollback("iris", actor=ACTOR)
    with pytest.raises(Conflict, match="candidate of canary"):
        lifecycle.retire("iris", 2, actor=ACTOR)
    lifecycle.promote("iris", 2, label="beta", actor=ACTOR)  # another label moves freely

    aborted = lifecycle.canary_abort("iris", actor=ACTOR, reason="p99 too high")
    assert aborted.describe() == "canary of iris aborted, 'stable' stays 1: p99 too high"
    state = repository.state("iris")
    assert state.canary is None
    assert state.labels["stable"] == 1
    with pytest.raises(Conflict, match="no canary running"):
        lifecycle.canary_abort("iris", actor=ACTOR)

    lifecycle.canary("iris", 2, actor=ACTOR)
    promoted = lifecycle.canary_promote("iris", actor=ACTOR)
    assert (promoted.operation, promoted.from_version, promoted.to_version) == ("promote", 1, 2)
    state = repository.state("iris")
    assert state.canary is None
    assert state.labels["stable"] == 2
    # a promote like any other: rollback undoes it
    assert previous_version(state.history, "stable", 2) == 1
    operations = [entry["operation"] for entry in state.history]
    assert operations[-5:] == ["canary", "promote", "abort", "canary", "promote"]


def test_canary_arguments_are_checked() -> None:
    with pytest.raises(UsageError, match="percentage"):
        Canary("c", "stable", 1, 2, 101.0)
    with pytest.raises(UsageError, match="weight 0 answers nothing"):
        Canary("c", "stable", 1, 2, 0.0)
    Canary("c", "stable", 1, 2, 0.0, shadow=True)
    with pytest.raises(UsageError, match="header name"):
        Canary("c", "stable", 1, 2, 5.0, header="x user")
    with pytest.raises(UsageError, match="tolerance"):
        Canary("c", "stable", 1, 2, 5.0, tolerance=float("nan"))


def test_a_sticky_value_lands_the_same_way_and_values_spread() -> None:
    canary = Canary("c-1", "stable", 1, 2, 10.0, header="x-user")
    shares = [canary.sticky_share(f"user-{i}".encode()) for i in range(20_000)]
    assert shares[:50] == [canary.sticky_share(f"user-{i}".encode()) for i in range(50)]
    below = sum(share < 0.1 for share in shares)
    assert 1_800 <= below <= 2_200  # 10 % of 20,000 within about 5 sd
    other = Canary("c-2", "stable", 1, 2, 10.0, header="x-user")
    assert [other.sticky_share(f"user-{i}".encode()) for i in range(50)] != shares[:50]


def test_the_cli_starts_promotes_and_aborts_a_canary_in_the_repository(repo3: Path) -> None:
    cli = Cli(repo3)
    where = ("--repo", str(repo3))
    assert cli("promote", "iris", "1", *where).exit_code == 0
    started = cli("canary", "start", "iris", "2", "--weight", "5", *where)
    assert started.exit_code == 0, started.stderr
    assert "canary iris: 5% of 'stable' to 2 (baseline 1)" in started.stdout
    assert LocalRepository(repo3).state("iris").canary is not None
    one_line_error(cli("canary", "start", "iris", "2", *where), 1, "is running")
    assert cli("canary", "abort", "iris", "--reason", "enough", *where).exit_code == 0
    assert LocalRepository(repo3).state("iris").canary is None
    one_line_error(
        cli("canary", "start", "iris", "2", "--weight", "0", *where), 2, "answers nothing"
    )
    shadow = cli("canary", "start", "iris", "2", "--weight", "0", "--shadow", *where)
    assert shadow.exit_code == 0, shadow.stderr
    promoted = cli("canary", "promote", "iris", *where)
    assert promoted.exit_code == 0, promoted.stderr
    assert "'stable' 1 -> 2" in promoted.stdout
    assert LocalRepository(repo3).state("iris").labels["stable"] == 2
    one_line_error(cli("canary", "promote", "iris", *where), 1, "no canary running")


# -- the shadow comparison ---------------------------------------------------------------------


def test_compare_counts_labels_and_the_largest_difference() -> None:
    labels = np.array([0, 1, 2])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], np.float32)
    assert compare([labels, probabilities], [labels, probabilities], 1e-4) == ("agree", 0.0)
    near = probabilities + np.float32(1e-5)
    outcome, largest = compare([labels, probabilities], [labels, near], 1e-4)
    assert outcome == "agree"
    assert 0 < largest < 1e-4
    outcome, largest = compare([labels, probabilities], [labels, probabilities + 0.25], 1e-4)
    assert (outcome, round(largest, 5)) == ("values_differ", 0.25)
    assert compare([labels], [np.array([0, 1, 1])], 1e-4)[0] == "labels_differ"
    assert compare([np.array(["a", "b"])], [np.array(["a", "c"])], 1.0)[0] == "labels_differ"
    assert compare([probabilities], [probabilities[:2]], 1.0) == ("values_differ", float("inf"))
    nan = np.array([np.nan, 1.0])
    assert compare([nan], [nan.copy()], 0.0) == ("agree", 0.0)
    assert compare([nan], [np.array([0.0, 1.0])], 1.0)[0] == "values_differ"


# -- figures and verdicts ------------------------------------------------------------------------


def test_quantiles_read_summed_buckets_as_prometheus_does() -> None:
    latency = Latency()
    assert latency.quantile(0.5) is None
    for bound, count in ((0.001, 50.0), (0.01, 90.0), (0.1, 100.0), (float("inf"), 100.0)):
        latency.add(bound, count / 2)
        latency.add(bound, count / 2)  # a second replica
    assert latency.quantile(0.5) == pytest.approx(0.001)
    assert latency.quantile(0.7) == pytest.approx(0.001 + 0.009 * 0.5)
    assert latency.quantile(0.99) == pytest.approx(0.01 + 0.09 * 0.9)
    latency.add(float("inf"), 100.0)  # half of them past the last bound
    assert latency.quantile(0.99) == pytest.approx(0.1)


REPLICA = """\
# TYPE mserve_canary_info gauge
mserve_canary_info{model="iris",canary="c1",label="stable",baseline="1",candidate="2",weight="10",header="",shadow="true"} 1.0
# TYPE mserve_canary_requests counter
mserve_canary_requests_total{model="iris",canary="c1",version="1",role="baseline",outcome="ok"} 900.0
mserve_canary_requests_total{model="iris",canary="c1",version="2",role="candidate",outcome="ok"} 90.0
mserve_canary_requests_total{model="iris",canary="c1",version="2",role="candidate",outcome="500"} 10.0
mserve_canary_requests_total{model="iris",canary="c0",version="2",role="candidate",outcome="500"} 99.0
mserve_canary_requests_total{model="other",canary="c1",version="2",role="candidate",outcome="500"} 99.0
# TYPE mserve_shadow_comparisons counter
mserve_shadow_comparisons_total{model="iris",canary="c1",version="2",outcome="agree"} 890.0
mserve_shadow_comparisons_total{model="iris",canary="c1",version="2",outcome="values_differ"} 10.0
mserve_shadow_comparisons_total{model="iris",canary="c1",version="2",outcome="dropped"} 5.0
# TYPE mserve_shadow_max_abs_difference gauge
mserve_shadow_max_abs_difference{model="iris",canary="c1",version="2"} 0.5
"""  # noqa: E501


def test_figures_add_up_over_replicas_and_the_gates_judge_them() -> None:
    figures = Figures("iris", "c1", Side(1), Side(2))
    add_replica(figures, "a", REPLICA)
    add_replica(figures, "b", REPLICA.replace("0.5", "0.75"))
    assert figures.applied_by == ["a", "b"]
    assert (figures.baseline.requests, figures.baseline.errors) == (1800, 0)
    assert (figures.candidate.requests, figures.candidate.errors) == (200, 20)
    assert figures.compared == 1800  # dropped copies were never compared
    assert figures.agreement == pytest.approx(890 / 900)
    assert figures.largest_difference == 0.75
    verdict = judge(figures, Gates(max_error_increase=0.05, min_agreement=0.95))
    assert verdict.outcome == "fail"
    assert verdict.reasons == (
        "error rate 10.00% against the baseline's 0.00% (more than 5.00% worse)",
    )
    assert judge(figures, Gates(max_error_increase=0.2, min_agreement=0.95)).outcome == "pass"
    disagreeing = judge(figures, Gates(max_error_increase=0.2, min_agreement=0.995))
    assert disagreeing.outcome == "fail"
    assert disagreeing.reasons[0].startswith("shadow agreement 98.89% under 99.50%")
    waiting = judge(figures, Gates(min_requests=5000))
    assert waiting == judge(figures, Gates(min_requests=5000))
    assert waiting.outcome == "wait"
