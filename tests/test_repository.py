from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mserve.errors import NotFoundError, RepositoryError, UsageError
from mserve.manifest import Manifest
from mserve.reference import Reference
from mserve.repository import LocalRepository
from mserve.signature import Signature

EMPTY = Signature((), ())


def publish(repo: LocalRepository, model: str = "m", content: bytes = b"onnx") -> Manifest:
    def write(staging: Path) -> Manifest:
        (staging / "model.onnx").write_bytes(content)
        return Manifest(model, 0, EMPTY, {}, {}, {"passed": True})

    return repo.publish(model, write)


def test_publish_allocates_consecutive_versions_with_hashes(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    assert [publish(repo).version for _ in range(3)] == [1, 2, 3]
    manifest = repo.manifest("m", 2)
    assert manifest.version == 2
    assert manifest.files == {"model.onnx": hashlib.sha256(b"onnx").hexdigest()}
    assert sorted(os.listdir(tmp_path / "m")) == [".lock", "1", "2", "3", "model.json"]


def test_a_deleted_version_number_is_never_reused(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    publish(repo)
    publish(repo)
    shutil.rmtree(tmp_path / "m" / "2")
    assert publish(repo).version == 3


def test_a_failing_writer_publishes_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)

    def write(staging: Path) -> Manifest:
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        repo.publish("m", write)
    assert os.listdir(tmp_path / "m") == []


def test_staging_left_by_a_dead_process_is_removed_by_the_next_publish(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stray = tmp_path / "m" / f".staging-{dead.stdout.strip()}-abcd"
    stray.mkdir(parents=True)
    mine = tmp_path / "m" / f".staging-{os.getpid()}-live"  # a live writer's staging stays
    mine.mkdir()
    publish(LocalRepository(tmp_path))
    assert not stray.exists() and mine.exists()


def test_resolve_explicit_label_stable_and_latest(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    for _ in range(3):
        publish(repo)
    assert repo.resolve(Reference.parse("m")) == ("m", 3)
    repo.update_state("m", lambda s: s.labels.update(stable=2, canary=3))
    assert repo.resolve(Reference.parse("m")) == ("m", 2)
    assert repo.resolve(Reference.parse("m@canary")) == ("m", 3)
    assert repo.resolve(Reference.parse("m:1")) == ("m", 1)
    repo.update_state("m", lambda s: (s.labels.clear(), s.retired.append(3)))
    assert repo.resolve(Reference.parse("m")) == ("m", 2)


@pytest.mark.parametrize(
    ("ref", "message"),
    [("m:9", "has no version 9"), ("m@beta", "has no label 'beta'"), ("other", "not found")],
)
def test_resolve_failures_are_not_found(tmp_path: Path, ref: str, message: str) -> None:
    repo = LocalRepository(tmp_path)
    publish(repo)
    with pytest.raises(NotFoundError, match=message):
        repo.resolve(Reference.parse(ref))


def test_a_missing_repository_is_reported(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        LocalRepository(tmp_path / "nope").models()


def test_listing_skips_hidden_foreign_and_versionless_directories(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    publish(repo, "b")
    publish(repo, "a")
    (tmp_path / ".trash").mkdir()
    (tmp_path / "Not_A_Model").mkdir()
    (tmp_path / "staging-only" / ".staging-1-x").mkdir(parents=True)
    (tmp_path / "a" / "notes").mkdir()
    (tmp_path / "a" / "007").mkdir()  # leading zeros: not a version
    assert repo.models() == ["a", "b"]
    assert repo.versions("a") == [1]


def test_symlinks_out_of_the_repository_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "evil").symlink_to(outside)
    repo = LocalRepository(root)
    with pytest.raises(RepositoryError, match="leads outside the repository"):
        repo.versions("evil")
    with pytest.raises(RepositoryError, match="leads outside the repository"):
        publish(repo, "evil")
    assert os.listdir(outside) == ["1"]
    publish(repo, "good")
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    (root / "good" / "1" / "weights.bin").symlink_to(secret)
    with pytest.raises(RepositoryError, match="leads outside its version"):
        repo.version_file("good", 1, "weights.bin")
    with pytest.raises(UsageError):
        repo.model_dir("../outside")


def test_model_state_changes_are_transactions_and_survive(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    publish(repo)
    repo.update_state("m", lambda s: s.labels.update(stable=1))
    on_disk = json.loads((tmp_path / "m" / "model.json").read_text())
    assert on_disk["labels"] == {"stable": 1} and on_disk["last_version"] == 1
    assert LocalRepository(tmp_path).state("m").labels == {"stable": 1}
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")] == []


def test_concurrent_state_changes_from_several_processes_are_never_lost(tmp_path: Path) -> None:
    publish(LocalRepository(tmp_path))
    script = (
        "import sys\n"
        "from mserve.repository import LocalRepository\n"
        "repo = LocalRepository(sys.argv[1])\n"
        "for i in range(40):\n"
        "    repo.update_state('m', lambda s: s.history.append({'writer': sys.argv[2], 'i': i}))\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(n)]) for n in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    entries = LocalRepository(tmp_path).state("m").history
    assert len(entries) == 160  # every read-modify-write saw the one before it
    for n in range(4):
        assert [e["i"] for e in entries if e["writer"] == str(n)] == list(range(40))


def test_a_corrupt_model_json_is_a_repository_error(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    publish(repo)
    (tmp_path / "m" / "model.json").write_text("{not json")
    with pytest.raises(RepositoryError, match="model.json is unreadable"):
        repo.state("m")
    (tmp_path / "m" / "model.json").write_text('{"labels": {"../x": 1}}')
    with pytest.raises(RepositoryError, match="model.json is unreadable"):
        repo.state("m")


def test_a_corrupt_manifest_is_a_repository_error(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path)
    publish(repo)
    (tmp_path / "m" / "1" / "manifest.json").write_text("[]")
    with pytest.raises(RepositoryError, match="manifest.json is unreadable"):
        repo.manifest("m", 1)
