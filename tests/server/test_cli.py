"""`mserve predict --server` and `mserve status --server` against a real server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mserve.repository import LocalRepository

from ..conftest import SAMPLES, Cli, free_port, wait_until

pytestmark = pytest.mark.slow


def test_predict_on_the_server_matches_local(cli: Cli, server: Any, served_repo: Any) -> None:
    row = "[[6.7, 3.0, 5.2, 2.3]]"
    remote = cli("predict", "iris", "--server", server.url, "-i", row, "--json")
    assert remote.exit_code == 0, remote.stderr
    local = cli("predict", "iris", "--repo", str(served_repo), "-i", row, "--json")
    assert json.loads(remote.stdout) == json.loads(local.stdout) | {"version": 1}
    churn = cli(
        "predict",
        "churn:1",
        "--server",
        server.url,
        "-i",
        f"@{SAMPLES / 'churn_sample.csv'}",
        "--json",
    )
    assert len(json.loads(churn.stdout)["outputs"]["label"]) == 20


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["predict", "iris", "-i", "[1, 2, 3]"], 1, "dimension 1 must be 4"),
        (["predict", "nope", "-i", "[1]"], 2, "model 'nope' not found"),
        (["predict", "iris:7", "-i", "[1, 2, 3, 4]"], 2, "no version 7"),
        (["predict", "iris@stable", "-i", "[1, 2, 3, 4]"], 2, "no label 'stable'"),
        (["status", "nope"], 2, "model 'nope' not found"),
    ],
)
def test_server_errors_keep_their_exit_codes(
    cli: Cli, server: Any, args: list[str], code: int, fragment: str
) -> None:
    result = cli(*args, "--server", server.url)
    assert result.exit_code == code, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_server_exits_3(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status"], ["predict", "iris", "-i", "[1, 2, 3, 4]"]):
        result = cli(*args, "--server", url)
        assert result.exit_code == 3 and "cannot reach" in result.stderr


def test_status_lists_models_versions_and_labels(cli: Cli, server: Any) -> None:
    report = json.loads(cli("status", "--server", server.url, "--json").stdout)
    assert report["live"] and report["ready"] and report["server"] == server.url
    assert {m["name"]: [v["state"] for v in m["versions"]] for m in report["models"]} == {
        "churn": ["AVAILABLE"],
        "iris": ["AVAILABLE"],
    }
    human = cli("status", "iris", "--server", server.url).stdout
    assert "iris" in human and "AVAILABLE" in human and "churn" not in human


def test_a_label_reference_predicts_through_its_version(
    cli: Cli, tmp_path: Any, served_repo: Any
) -> None:
    import shutil

    from ..conftest import Server

    repo = tmp_path / "models"
    shutil.copytree(served_repo, repo)
    LocalRepository(repo).update_state("iris", lambda s: s.labels.update(stable=1))
    server = Server(repo)
    try:
        assert wait_until(
            lambda: (
                json.loads(cli("status", "--server", server.url, "--json").stdout)["models"][1][
                    "labels"
                ]
                == {"stable": 1}
            )
        )
        result = cli(
            "predict", "iris@stable", "--server", server.url, "-i", "[5.1, 3.5, 1.4, 0.2]", "--json"
        )
        assert json.loads(result.stdout)["version"] == 1
    finally:
        assert server.stop() == 0
