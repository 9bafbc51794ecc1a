"""The mirror of a server on an object store (mserve/server/mirror.py), driven directly on a
``memory://`` store: what it copies, what it evicts, and what it refuses to write."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest

import mserve
from mserve.server.mirror import Mirror
from mserve.server.settings import VersionPolicy
from mserve.stores import StoreRepository
from tests.conftest import SAMPLES


@pytest.fixture
def store() -> StoreRepository:
    location = f"memory://mirror-{secrets.token_hex(4)}/models"
    for _ in range(3):
        mserve.export(SAMPLES / "iris_classifier.onnx", name="iris", repo=location)
    return StoreRepository(location)


def test_it_copies_what_is_served_and_evicts_the_rest(
    store: StoreRepository, tmp_path: Path
) -> None:
    mirror = Mirror(store, tmp_path / "cache", VersionPolicy.parse("latest:1"))
    mirror.sync()
    assert sorted(p.name for p in (tmp_path / "cache" / "iris").iterdir()) == ["3", "model.json"]
    store.update_state("iris", lambda s: s.labels.update(stable=1))
    store.update_state("iris", lambda s: s.retired.append(3))
    mirror.sync(full=False)  # model.json changed: looked at again
    assert sorted(p.name for p in (tmp_path / "cache" / "iris").iterdir()) == [
        "1",
        "2",
        "model.json",
    ]
    copied = json.loads((tmp_path / "cache" / "iris" / "model.json").read_text())
    assert copied["labels"] == {"stable": 1}


@pytest.mark.parametrize("name", ["/etc/evil", "../../evil", "samples/../../evil"])
def test_a_manifest_naming_a_file_outside_its_version_is_refused(
    store: StoreRepository, tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = json.loads(store.read_bytes("iris", "3/manifest.json"))
    manifest["files"][name] = "0" * 64
    key = f"{store.store.root}/iris/3/manifest.json"
    store.store.fs.pipe_file(key, json.dumps(manifest).encode())
    mserve.export(SAMPLES / "iris_classifier.onnx", name="other", repo=store.location)
    mirror = Mirror(store, tmp_path / "cache", VersionPolicy.parse("latest:1"))
    with caplog.at_level(logging.ERROR, logger="mserve.server"):
        mirror.sync()
        mirror.sync()
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "iris").iterdir()) == ["model.json"]
    assert (tmp_path / "cache" / "other" / "1" / "model.onnx").is_file()  # the others go on
    assert not mirror.error
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("cannot copy iris:3 from the model repository")
