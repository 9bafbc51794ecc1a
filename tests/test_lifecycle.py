"""The lifecycle rules on a repository, without a server: gates, refusals, the audit trail, and
rollback's history. The server's admin API runs this same code (tests/server/test_admin.py)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mserve.errors import Conflict, NotFoundError, UsageError, ValidationError
from mserve.lifecycle import Lifecycle, default_actor, previous_version
from mserve.repository import LocalRepository


@pytest.fixture
def lifecycle(repo3: Path) -> Lifecycle:
    return Lifecycle(LocalRepository(repo3), via="test")


def history(repo: Path) -> list[dict[str, Any]]:
    return list(LocalRepository(repo).state("iris").history)


def test_promote_rollback_retire_round_trip_with_an_audit_trail(
    lifecycle: Lifecycle, repo3: Path
) -> None:
    first = lifecycle.promote("iris", 1, actor="alice")
    assert (first.changed, first.from_version, first.to_version) == (True, None, 1)
    lifecycle.promote("iris", 2, actor="bob")
    assert LocalRepository(repo3).state("iris").labels == {"stable": 2}
    back = lifecycle.rollback("iris", actor="carol")
    assert (back.from_version, back.to_version) == (2, 1)
    retired = lifecycle.retire("iris", 2, actor="dave")
    assert retired.changed and retired.version == 2
    state = LocalRepository(repo3).state("iris")
    assert (state.labels, state.retired) == ({"stable": 1}, [2])
    entries = state.history
    assert [(e["operation"], e.get("from"), e.get("to"), e["actor"]) for e in entries] == [
        ("promote", None, 1, "alice"),
        ("promote", 1, 2, "bob"),
        ("rollback", 2, 1, "carol"),
        ("retire", None, None, "dave"),
    ]
    assert entries[-1]["version"] == 2
    assert all(e["via"] == "test" and e["time"].endswith("Z") for e in entries)


def test_repeating_a_change_is_a_no_op_that_leaves_no_entry(lifecycle: Lifecycle) -> None:
    lifecycle.promote("iris", 1, actor="a")
    lifecycle.retire("iris", 2, actor="a")
    again = lifecycle.promote("iris", 1, actor="a")
    assert not again.changed and again.describe().endswith("(already)")
    assert not lifecycle.retire("iris", 2, actor="a").changed
    assert len(history(lifecycle.repository.root)) == 2


def test_promote_refuses_a_breaking_change_unless_allowed(
    lifecycle: Lifecycle, repo3: Path
) -> None:
    lifecycle.promote("iris", 2, actor="a")
    with pytest.raises(Conflict, match=r"iris:3 breaks clients of iris:2 \('stable'\).*--allow"):
        lifecycle.promote("iris", 3, actor="a")
    assert LocalRepository(repo3).state("iris").labels == {"stable": 2}
    assert lifecycle.promote("iris", 3, actor="a", allow_breaking=True).changed
    # A label nobody holds yet has no clients to break.
    assert lifecycle.promote("iris", 3, label="canary", actor="a").changed


def test_promote_refuses_a_version_that_does_not_validate(
    lifecycle: Lifecycle, repo3: Path
) -> None:
    (repo3 / "iris" / "2" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ValidationError, match="iris:2 does not validate: files: model.onnx was"):
        lifecycle.promote("iris", 2, actor="a")
    assert history(repo3) == []


def test_refusals(lifecycle: Lifecycle, repo3: Path) -> None:
    lifecycle.promote("iris", 1, actor="a")
    with pytest.raises(NotFoundError, match="no version 9"):
        lifecycle.promote("iris", 9, actor="a")
    with pytest.raises(NotFoundError, match="not found"):
        lifecycle.promote("nosuch", 1, actor="a")
    with pytest.raises(UsageError, match="label"):
        lifecycle.promote("iris", 2, label="not a label!", actor="a")
    with pytest.raises(Conflict, match="iris:1 carries 'stable'"):
        lifecycle.retire("iris", 1, actor="a")
    with pytest.raises(Conflict, match="no earlier version"):
        lifecycle.rollback("iris", actor="a")
    with pytest.raises(NotFoundError, match="no label 'canary'"):
        lifecycle.rollback("iris", label="canary", actor="a")
    lifecycle.retire("iris", 2, actor="a")
    with pytest.raises(Conflict, match="iris:2 is retired"):
        lifecycle.promote("iris", 2, actor="a")
    with pytest.raises(UsageError, match="actor"):
        lifecycle.promote("iris", 3, actor="x" * 300, allow_breaking=True)
    assert len(history(repo3)) == 2  # nothing refused left a trace


def test_labels_of_an_unloaded_model_do_not_move(lifecycle: Lifecycle, repo3: Path) -> None:
    lifecycle.promote("iris", 1, actor="a")
    assert lifecycle.set_serving("iris", False, actor="a").changed
    with pytest.raises(Conflict, match="unloaded; load it before"):
        lifecycle.promote("iris", 2, actor="a")
    assert lifecycle.set_serving("iris", True, actor="a").changed
    assert not lifecycle.set_serving("iris", True, actor="a").changed
    assert lifecycle.promote("iris", 2, actor="a").changed
    assert [e["operation"] for e in history(repo3)] == ["promote", "unload", "load", "promote"]


def test_the_last_live_version_is_not_retired(lifecycle: Lifecycle) -> None:
    lifecycle.retire("iris", 1, actor="a")
    lifecycle.retire("iris", 2, actor="a")
    with pytest.raises(Conflict, match="iris:3 is the last live version"):
        lifecycle.retire("iris", 3, actor="a")


def test_rollback_refuses_a_retired_or_deleted_target(lifecycle: Lifecycle, repo3: Path) -> None:
    lifecycle.promote("iris", 1, actor="a")
    lifecycle.promote("iris", 2, actor="a")
    lifecycle.retire("iris", 1, actor="a")
    with pytest.raises(Conflict, match="back to iris:1: it is retired"):
        lifecycle.rollback("iris", actor="a")
    state = LocalRepository(repo3).state("iris")
    state_file = repo3 / "iris" / "model.json"
    data = json.loads(state_file.read_text())
    data["retired"] = []
    state_file.write_text(json.dumps(data))
    shutil.rmtree(repo3 / "iris" / "1")
    with pytest.raises(Conflict, match="it was deleted"):
        lifecycle.rollback("iris", actor="a")
    assert state.labels == {"stable": 2}


@pytest.mark.parametrize(
    ("moves", "current", "expected"),
    [
        ([], 3, None),
        ([("promote", None, 1)], 1, None),
        ([("promote", None, 1), ("promote", 1, 2)], 2, 1),
        ([("promote", 1, 2)], 2, 1),  # history that begins after the label was first set
        ([("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)], 1, None),
        ([("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2)], 2, 1),
        ([("promote", None, 1), ("promote", 1, 2), ("promote", 2, 1)], 1, 2),
        ([("promote", None, 1), ("promote", 1, 2)], 5, 2),  # model.json edited by hand since
    ],
)
def test_rollback_undoes_promotes_like_a_stack(
    moves: list[tuple[str, int | None, int]], current: int, expected: int | None
) -> None:
    entries: list[dict[str, Any]] = [
        {"operation": op, "label": "stable", "from": old, "to": new} for op, old, new in moves
    ]
    entries.insert(0, {"operation": "promote", "label": "canary", "from": None, "to": 9})
    entries.append({"operation": "retire", "version": 7})
    assert previous_version(entries, "stable", current) == expected


def test_the_default_actor_names_the_ci_user_and_job() -> None:
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_SHA": "abc",
        "GITHUB_RUN_ID": "42",
        "GITHUB_REPOSITORY": "acme/models",
    }
    assert default_actor(github) == (
        "octocat (github-actions https://github.com/acme/models/actions/runs/42)"
    )
    assert "@" in default_actor({})


def test_concurrent_promotes_from_several_processes_are_serialized(repo3: Path) -> None:
    """Six `mserve promote --repo` at once all succeed and leave one unbroken chain of moves
    (test_repository checks that the transactions under it lose nothing)."""
    promote = [sys.executable, "-m", "mserve", "promote", "iris"]
    processes = [
        subprocess.Popen(
            [*promote, str(1 + i % 2), "--repo", str(repo3), "--actor", f"job{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in processes]
    assert [code for _, code in results] == [0] * 6, [err for (_, err), _ in results]
    entries = history(repo3)
    assert len(entries) >= 2, "two versions alternate: at least two moves"
    for before, after in itertools.pairwise(entries):
        assert after["from"] == before["to"]  # no change was lost or applied to a stale state
    assert LocalRepository(repo3).state("iris").labels["stable"] == entries[-1]["to"]
