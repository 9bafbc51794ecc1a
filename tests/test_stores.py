"""Repositories on object stores (mserve/stores.py): the same lifecycle on a folder, on
``memory://`` and on a real S3 API (moto's server on loopback), and what only object stores
need: versions claimed by create-only writes, committed by their manifest, state changed by
compare-and-swap, a store that ignores conditions refused, an unreachable one reported."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from mserve.cli.app import app
from typer.testing import CliRunner

import mserve
from mserve.errors import Conflict, EnvironmentProblem
from mserve.lifecycle import Lifecycle
from mserve.stores import StoreRepository, open_repository
from mserve.validation import validate
from tests.conftest import ENV, SAMPLES, SECRET, free_port, new_bucket, one_line_error


@pytest.fixture(params=["folder", "memory", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty repository of each kind."""
    if request.param == "folder":
        return str(tmp_path / "models")
    if request.param == "memory":
        return f"memory://mserve-{secrets.token_hex(4)}/models"
    request.getfixturevalue("s3_server")
    return f"s3://{new_bucket()}/team/models"


def export(location: str, model: Any, x: Any) -> int:
    return mserve.export(model, name="iris", repo=location, sample=x[:5]).version


def test_the_lifecycle_on_every_kind_of_repository(
    location: str, iris_pipeline: Any, iris_data: Any
) -> None:
    x = iris_data[0]
    assert [export(location, iris_pipeline, x) for _ in range(2)] == [1, 2]
    repository = open_repository(location)
    assert repository.models() == ["iris"]
    assert repository.versions("iris") == [1, 2]
    assert validate(repository, "iris", 2, against=("iris", 1)).passed

    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"MSERVE_REPO": location})

    listed = cli("list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert '"iris"' in listed.stdout
    assert cli("show", "iris:1").exit_code == 0
    assert cli("validate", "iris:2", "--against", "iris:1").exit_code == 0
    predicted = cli("predict", "iris:2", "--input", f"@{SAMPLES / 'iris_sample.csv'}", "--json")
    assert predicted.exit_code == 0, predicted.stderr
    benched = cli("bench", "iris:2", "--batch-size", "1", "--duration", "0.2", "--json")
    assert benched.exit_code == 0, benched.stderr
    for command in (
        ("promote", "iris", "1", "--repo", location),
        ("promote", "iris", "2", "--repo", location),
        ("rollback", "iris", "--repo", location),
        ("retire", "iris", "2", "--repo", location),
    ):
        result = cli(*command)
        assert result.exit_code == 0, (command, result.stderr)
    state = repository.state("iris")
    assert (state.labels, state.retired) == ({"stable": 1}, [2])
    assert [entry["operation"] for entry in state.history] == [
        "promote",
        "promote",
        "rollback",
        "retire",
    ]


def test_racing_exporters_get_distinct_versions(
    location: str, iris_pipeline: Any, iris_data: Any
) -> None:
    versions: list[int] = []
    start = threading.Barrier(4)

    def one() -> None:
        start.wait()
        versions.append(export(location, iris_pipeline, iris_data[0]))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == [1, 2, 3, 4]
    repository = open_repository(location)
    assert repository.versions("iris") == [1, 2, 3, 4]
    assert repository.state("iris").last_version == 4


@pytest.mark.parametrize("location", ["memory", "s3"], indirect=True)
def test_two_promotes_on_the_same_state_one_wins_one_is_told(
    location: str, iris_pipeline: Any, iris_data: Any
) -> None:
    for _ in range(3):
        export(location, iris_pipeline, iris_data[0])
    both_read = threading.Barrier(2, timeout=30)
    outcomes: dict[int, Any] = {}

    def promote(version: int) -> None:
        lifecycle = Lifecycle(open_repository(location), prepare=lambda *_: both_read.wait())
        try:
            outcomes[version] = lifecycle.promote("iris", version, actor="ci").to_version
        except Conflict as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=promote, args=(v,)) for v in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [v for v, outcome in outcomes.items() if outcome == v]
    lost = [outcome for outcome in outcomes.values() if isinstance(outcome, Conflict)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "nothing was changed" in str(lost[0])
    state = open_repository(location).state("iris")
    assert state.labels == {"stable": won[0]}
    assert len(state.history) == 1


@pytest.mark.parametrize("location", ["memory", "s3"], indirect=True)
def test_a_writer_stopped_mid_upload_leaves_no_version(
    location: str, iris_pipeline: Any, iris_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    export(location, iris_pipeline, iris_data[0])
    original = StoreRepository.__init__

    def dying(self: StoreRepository, url: str) -> None:
        original(self, url)
        create = self.store.create

        def create_then_die(key: str, data: Any) -> None:
            if key.endswith("model.onnx"):
                create(key, data)
                raise KeyboardInterrupt  # killed after its first file
            create(key, data)

        self.store.create = create_then_die  # type: ignore[method-assign]

    monkeypatch.setattr(StoreRepository, "__init__", dying)
    with pytest.raises(KeyboardInterrupt):
        export(location, iris_pipeline, iris_data[0])
    monkeypatch.undo()

    repository = open_repository(location)
    assert repository.versions("iris") == [1]  # version 2 has files but no manifest
    assert "model.onnx" in repository.files("iris", 2)
    assert export(location, iris_pipeline, iris_data[0]) == 3  # its number is never reused
    assert repository.versions("iris") == [1, 3]


def test_a_store_that_ignores_conditions_is_never_written(
    s3_server: str, iris_pipeline: Any, iris_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    location = f"s3://{new_bucket()}/models"
    pipe_file = s3fs.S3FileSystem.pipe_file

    def unconditional(self: Any, path: str, value: bytes, mode: str = "overwrite", **_: Any) -> Any:
        return pipe_file(self, path, value)  # what a store without conditions does

    monkeypatch.setattr(s3fs.S3FileSystem, "pipe_file", unconditional)
    with pytest.raises(EnvironmentProblem, match="does not honour conditional writes"):
        export(location, iris_pipeline, iris_data[0])
    monkeypatch.undo()
    assert open_repository(location).models() == []


def test_an_unreachable_store_is_one_line_without_secrets(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**ENV, "AWS_ENDPOINT_URL_S3": endpoint}
    result = CliRunner().invoke(app, ["list", "--repo", "s3://models/x"], env=env)
    one_line_error(result, 3, "s3://models/x")
    assert SECRET not in result.stdout + result.stderr


def test_an_unknown_kind_of_url_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["list", "--repo", "ftp://example.com/models"])
    one_line_error(result, 2, "ftp://example.com/models")
