"""The model repository: ``<repo>/<model>/<version>/`` plus ``<repo>/<model>/model.json``, in a
folder (here) or on an object store (``mserve.stores``).

In a folder, writers take a per-model file lock; readers never lock, because every change
becomes visible by one rename: a version directory is built in a staging directory beside it
and renamed into place, and ``model.json`` is replaced whole. Nothing outside the repository
root is read or written, whatever a name or a symlink says.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import errno
import hashlib
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import confined
from .canary import Canary
from .errors import NotFoundError, ReadOnlyRepository, RepositoryError, UsageError
from .manifest import MANIFEST_FILE, Manifest, sha256_file, write_json
from .reference import VERSION, Reference, check_label, check_model_name

MODEL_STATE_FILE = "model.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
LOCK_TIMEOUT_S = 120.0
# What a write into a read-only mount, or a folder this process may not write, fails with.
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


STABLE = "stable"  # the label a request without a version goes to


def default_version(labels: dict[str, int], candidates: Collection[int]) -> int:
    """The one default-version rule, for the CLI and every server transport: the ``stable``
    label's version when it is among CANDIDATES, else the newest of them."""
    stable = labels.get(STABLE)
    return stable if stable is not None and stable in candidates else max(candidates)


@dataclass
class ModelState:
    """Everything about a model that is not one version: labels, retirements, their history."""

    labels: dict[str, int] = field(default_factory=dict)
    retired: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    unloaded: bool = False  # taken out of service through the V2 repository extension
    # Highest version ever allocated: a deleted version's number is never handed out again,
    # so a server that cached version N never sees a different N.
    last_version: int = 0
    canary: Canary | None = None  # one label's requests split with a candidate (canary.py)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "labels": self.labels,
            "retired": sorted(self.retired),
            "history": self.history,
            "settings": self.settings,
            "unloaded": self.unloaded,
            "last_version": self.last_version,
        }
        if self.canary is not None:
            data["canary"] = self.canary.to_dict()
        return data

    @property
    def pinned(self) -> set[int]:
        """Versions served whatever the version policy: labelled ones, a canary's candidate."""
        return {*self.labels.values(), *([self.canary.candidate] if self.canary else [])}

    def fingerprint(self) -> str:
        """This state, in 16 hex digits: what replicas report having applied (equal on every
        replica that has, and to the repository's own when none lags)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelState:
        labels = {check_label(str(k)): int(v) for k, v in data.get("labels", {}).items()}
        return cls(
            labels=labels,
            retired=[int(v) for v in data.get("retired", [])],
            history=list(data.get("history", [])),
            settings=dict(data.get("settings", {})),
            unloaded=bool(data.get("unloaded", False)),
            last_version=int(data.get("last_version", 0)),
            canary=Canary.from_dict(data["canary"]) if data.get("canary") else None,
        )


@dataclass(frozen=True)
class ModelEntry:
    """One model in a listing; ``state`` is None when its ``model.json`` cannot be read, and
    ``problem`` says why (in words that name no host path)."""

    name: str
    versions: list[int]
    state: ModelState | None
    problem: str = ""


class Repository(abc.ABC):
    """A model repository: a folder (``LocalRepository``) or a prefix of an object store
    (``mserve.stores``); ``open_repository`` picks the kind from the location. What is read is
    the same on both; how a change is made safe differs (a rename and a lock here, conditional
    writes there)."""

    location: str  # as users name it: a folder, or a URL

    # -- what each kind provides -----------------------------------------------------------

    @abc.abstractmethod
    def models(self) -> list[str]:
        """Every model with at least one published version."""

    @abc.abstractmethod
    def versions(self, model: str) -> list[int]:
        """Every published version, retired ones included, in ascending order."""

    @abc.abstractmethod
    def read_bytes(self, model: str, relative: str, *, label: str = "") -> bytes:
        """A file below ``<repo>/<model>/`` (``confined.MissingFile`` when there is none,
        ``UnsafeFile`` for one that may not be read)."""

    @abc.abstractmethod
    def files(self, model: str, version: int) -> list[str]:
        """Every file of a version, relative to it (links and unlisted files too)."""

    @abc.abstractmethod
    def update_state(self, model: str, change: Callable[[ModelState], None]) -> ModelState:
        """Apply ``change`` to ``model.json`` as one transaction: nothing is written if it
        raises or changes nothing."""

    @abc.abstractmethod
    def publish(self, model: str, write: Callable[[Path], Manifest]) -> Manifest:
        """Publish the next version of ``model``: ``write`` fills a local staging folder and
        returns the manifest (its version is set here). No reader ever sees half a version,
        and a version number is never handed out twice."""

    # -- reading, the same for every kind ---------------------------------------------------

    def version_location(self, model: str, version: int) -> str:
        return f"{self.location.rstrip('/')}/{model}/{version}"

    def state(self, model: str) -> ModelState:
        try:
            data = self.read_bytes(model, MODEL_STATE_FILE)
        except confined.MissingFile:
            return ModelState()
        except confined.UnsafeFile as exc:
            raise RepositoryError(f"{model}: {MODEL_STATE_FILE} is unreadable ({exc})") from None
        return parse_state(model, data)

    def entry(self, model: str) -> ModelEntry:
        """MODEL as a listing shows it: what can be read of it, and what cannot (NotFoundError
        for an unknown model)."""
        try:
            versions = self.versions(model)
        except OSError as exc:
            problem = f"{model}: its folder cannot be read ({exc.strerror})"
            return ModelEntry(model, [], None, problem)
        try:
            return ModelEntry(model, versions, self.state(model))
        except RepositoryError as exc:
            return ModelEntry(model, versions, None, str(exc))

    def entries(self) -> list[ModelEntry]:
        """Every model, each with what can be read of it: one unreadable ``model.json`` hides
        none of the others."""
        return [self.entry(name) for name in self.models()]

    def stored_arrays(self, model: str, version: int, relative: str) -> dict[str, Any] | None:
        """The arrays of a version's ``.npz`` file (SAMPLE_INPUTS, SAMPLE_OUTPUTS), never
        unpickled; None if the version has none."""
        import numpy as np

        try:
            data = self.read_bytes(model, f"{version}/{relative}", label=f"{model}:{version}")
        except confined.MissingFile:
            return None
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}

    def manifest(self, model: str, version: int) -> Manifest:
        """A version's manifest, read confined (a link to a manifest elsewhere is refused)."""
        where = f"{model}:{version}"
        try:
            data = self.read_bytes(model, f"{version}/{MANIFEST_FILE}", label=where)
        except confined.MissingFile:
            raise RepositoryError(f"{where}: {MANIFEST_FILE} is missing") from None
        return Manifest.parse(data, where)

    def resolve(self, ref: Reference) -> tuple[str, int]:
        """The version a reference names: explicit, by label, else ``stable``, else latest."""
        versions = self.versions(ref.model)
        if ref.version is not None:
            if ref.version not in versions:
                raise NotFoundError(f"model {ref.model!r} has no version {ref.version}")
            return ref.model, ref.version
        state = self.state(ref.model)
        if ref.label is not None:
            if ref.label not in state.labels:
                raise NotFoundError(f"model {ref.model!r} has no label {ref.label!r}")
            version = state.labels[ref.label]
            if version not in versions:
                raise RepositoryError(
                    f"label {ref.label!r} of {ref.model!r} names missing {version}"
                )
            return ref.model, version
        candidates = [v for v in versions if v not in state.retired]
        if state.labels.get(STABLE) in versions:
            candidates.append(state.labels[STABLE])
        if not candidates:
            raise NotFoundError(f"model {ref.model!r} has no version to serve")
        return ref.model, default_version(state.labels, candidates)


def parse_state(model: str, data: bytes) -> ModelState:
    try:
        return ModelState.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, TypeError, AttributeError, KeyError, UsageError) as exc:
        raise RepositoryError(
            f"{model}: {MODEL_STATE_FILE} is unreadable ({_why_unreadable(exc)})"
        ) from None


class LocalRepository(Repository):
    """A repository in a folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)

    # -- paths -----------------------------------------------------------------------------

    def _confined(self, path: Path) -> Path:
        """``path`` if it resolves inside the repository; symlinks may not lead out of it."""
        real_root = self.root.resolve()
        if not path.resolve().is_relative_to(real_root):
            raise RepositoryError(f"{path.relative_to(self.root)} leads outside the repository")
        return path

    def model_dir(self, model: str) -> Path:
        return self._confined(self.root / check_model_name(model))

    def version_dir(self, model: str, version: int) -> Path:
        return self._confined(self.model_dir(model) / str(version))

    def version_file(self, model: str, version: int, relative: str) -> Path:
        path = self.version_dir(model, version) / relative
        real = path.resolve()
        if not real.is_relative_to(self.version_dir(model, version).resolve()):
            raise RepositoryError(f"{model}:{version}: {relative} leads outside its version")
        return path

    # -- reading ---------------------------------------------------------------------------

    def files(self, model: str, version: int) -> list[str]:
        directory = self.version_dir(model, version)
        return sorted(
            str(path.relative_to(directory))
            for path in directory.rglob("*")
            if path.is_file() or path.is_symlink()
        )

    def _require_root(self) -> None:
        self._require_writable_root()
        if not self.root.is_dir():
            raise NotFoundError(f"model repository {self.root} does not exist")

    def _require_writable_root(self) -> None:
        """A repository is created on first write, but not over a file."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"model repository {self.root} is not a directory")

    def models(self) -> list[str]:
        self._require_root()
        names = []
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    if self.versions(entry.name):  # a first export still staging is no model yet
                        names.append(entry.name)
                except (UsageError, RepositoryError):
                    continue
                except OSError:  # listed all the same: whoever reads it next says why it fails
                    names.append(entry.name)
        return sorted(names)

    def versions(self, model: str) -> list[int]:
        self._require_root()
        directory = self.model_dir(model)
        if not directory.is_dir():
            raise NotFoundError(f"model {model!r} not found in {self.root}")
        return sorted(
            int(e.name) for e in directory.iterdir() if VERSION.fullmatch(e.name) and e.is_dir()
        )

    def read_bytes(self, model: str, relative: str, *, label: str = "") -> bytes:
        """Read through ``confined``: no symbolic link on the way, no hard link."""
        return confined.read_bytes(
            self.root, f"{check_model_name(model)}/{relative}", label=label or model
        )

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self, model: str) -> Iterator[None]:
        """Turn a refused write into one line saying the repository is read-only."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _READ_ONLY_ERRNOS:
                raise
            raise ReadOnlyRepository(
                f"the model repository is read-only: cannot change {model!r} "
                f"({os.strerror(exc.errno or 0).lower()})"
            ) from None

    @contextlib.contextmanager
    def locked(self, model: str) -> Iterator[Path]:
        """Hold the model's write lock; yields the model directory (created if new)."""
        from filelock import FileLock, Timeout  # imported here: most commands never write

        self._require_writable_root()
        directory = self.model_dir(model)
        with self._writing(model):
            directory.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self._confined(directory / LOCK_FILE)), timeout=LOCK_TIMEOUT_S)
            try:
                lock.acquire()
            except Timeout:
                raise RepositoryError(
                    f"{model}: another writer held the lock for {LOCK_TIMEOUT_S:.0f} s"
                ) from None
        try:
            yield directory
        finally:
            lock.release()

    def update_state(self, model: str, change: Callable[[ModelState], None]) -> ModelState:
        """Under the model's lock: read, change, write a temporary file, rename it."""
        with self.locked(model) as directory:
            state = self.state(model)
            before = copy.deepcopy(state.to_dict())
            change(state)
            if state.to_dict() != before:
                with self._writing(model):
                    _replace_json(directory / MODEL_STATE_FILE, state.to_dict())
            return state

    def publish(self, model: str, write: Callable[[Path], Manifest]) -> Manifest:
        """The staging folder is beside the version's, and becomes it by one rename; if
        anything fails, or the process is stopped, no version appears."""
        self._require_writable_root()
        directory = self.model_dir(model)
        staging = directory / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with self._writing(model):
                directory.mkdir(parents=True, exist_ok=True)
                staging.mkdir()
            manifest = write(staging)
            manifest.model = model
            manifest.files = {
                str(p.relative_to(staging)): sha256_file(p)
                for p in sorted(staging.rglob("*"))
                if p.is_file() and p.name != MANIFEST_FILE
            }
            with self.locked(model):
                _remove_abandoned_staging(directory)
                state = self.state(model)
                existing = self.versions(model)
                manifest.version = max([state.last_version, *existing]) + 1
                manifest.write(staging)
                _fsync_tree(staging)
                os.rename(staging, directory / str(manifest.version))
                _fsync_dir(directory)
                state.last_version = manifest.version
                _replace_json(directory / MODEL_STATE_FILE, state.to_dict())
            return manifest
        finally:
            _remove_staging(staging)


class OneModelRepository(LocalRepository):
    """One model's folder served as a repository that holds that model alone: its versions and
    ``model.json`` at the top, as KServe mounts a model at ``/mnt/models``."""

    def __init__(self, root: str | os.PathLike[str], name: str) -> None:
        super().__init__(root)
        self.name = check_model_name(name)

    def model_dir(self, model: str) -> Path:
        if model != self.name:
            raise NotFoundError(f"model {model!r} not found (this folder holds {self.name!r})")
        return self._confined(self.root)

    def models(self) -> list[str]:
        self._require_root()
        return [self.name] if self.versions(self.name) else []

    def read_bytes(self, model: str, relative: str, *, label: str = "") -> bytes:
        self.model_dir(model)
        return confined.read_bytes(self.root, relative, label=label or model)


def _why_unreadable(exc: Exception) -> str:
    """Why a JSON file could not be read, without its path (replies show this)."""
    if isinstance(exc, OSError):
        return exc.strerror or "cannot be read"
    if isinstance(exc, ValueError | UsageError):
        return str(exc)  # JSON syntax (line and column), a bad number or label
    return "a field has the wrong type"


def _remove_staging(staging: Path) -> None:
    """Remove a staging directory even when a stop signal lands during the removal (the CLI
    turns SIGINT and SIGTERM into exceptions): finish, then let the stop go on."""
    stopped: BaseException | None = None
    while True:
        try:
            shutil.rmtree(staging, ignore_errors=True)
            break
        except (KeyboardInterrupt, SystemExit) as exc:
            stopped = exc
    if stopped is not None:
        raise stopped


def _replace_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_json(temporary, data)
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(root)


def _remove_abandoned_staging(directory: Path) -> None:
    """Remove staging directories of exports that were killed (their process is gone)."""
    for entry in directory.glob(f"{STAGING_PREFIX}*"):
        pid_text = entry.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
