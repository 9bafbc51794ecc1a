"""Model repositories on object stores: ``s3://bucket/prefix``, ``gs://bucket/prefix`` and
``memory://prefix`` (for tests), through fsspec (``s3fs``, ``gcsfs``: ``mserve[s3]``,
``mserve[gcs]``), with the layout of a folder (``<model>/<version>/...``, ``<model>/model.json``).

Object stores have no rename and no lock. What they have, and all this relies on, are
conditional writes: create-only (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``) and
compare-and-swap (S3 ``If-Match: <etag>``, GCS ``ifGenerationMatch=<generation>``).

- **Publishing.** A version number is claimed by creating ``<model>/.claims/<N>`` (create-only:
  of two exporters, one gets N and the other tries N+1). The version's files are uploaded, then
  its ``manifest.json`` (every file's sha256) is created last: it is the commit marker, and
  readers ignore a version without one. A writer killed half-way leaves a claim and some files,
  never a version; its number is never handed out again. ``model.json``'s ``last_version`` is
  then raised by compare-and-swap (retried: raising a maximum cannot conflict with anything).
- **State changes** (labels, retirements, settings): ``model.json`` is read with its ETag (or
  generation), changed, and written only if it is still that one. Of two concurrent changes
  based on the same state one wins; the other is refused with ``Conflict`` (exit 1, HTTP 409),
  nothing written, and can be run again against the new state.
- **A store that ignores the conditions** (some S3-compatible stores) would silently let two
  writers both win, so before its first write a repository checks, with a probe object, that
  a second create-only write and a stale compare-and-swap are both refused; a store that
  accepts either is never written to (reading works).

Credentials come from each library's own chain (``AWS_*`` variables, profiles, instance roles;
``GOOGLE_APPLICATION_CREDENTIALS``, gcloud); ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``)
points at an S3-compatible store. They are never logged, shown or written anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import confined
from .errors import (
    Conflict,
    EnvironmentProblem,
    MissingExtraError,
    NotFoundError,
    RepositoryError,
    UsageError,
)
from .manifest import MANIFEST_FILE, Manifest, sha256_file
from .reference import VERSION, check_model_name
from .repository import (
    MODEL_STATE_FILE,
    LocalRepository,
    ModelState,
    Repository,
    parse_state,
)

CLAIMS = ".claims"  # <model>/.claims/<N>: version numbers handed out
EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}
_HONOURING: set[str] = set()  # stores found to honour conditional writes, by location
CAS_RETRIES = 20  # raising last_version: tries before giving up (each lost to another writer)


def open_repository(location: str | os.PathLike[str]) -> Repository:
    """The repository at LOCATION: a folder (a path, or a ``file://`` URL), or a prefix of an
    object store (``s3://bucket/prefix``, ``gs://...``, ``memory://...``)."""
    text = os.fspath(location)
    scheme, _, rest = text.partition("://")
    if not rest:
        return LocalRepository(text)
    if scheme == "file":
        return LocalRepository(rest)
    return StoreRepository(text)


class StoreUnreachable(EnvironmentProblem):
    """The store did not answer, or refused this process (credentials, permissions)."""


class StaleWrite(Exception):
    """A compare-and-swap found the object changed (or gone) since it was read."""


class StoreRepository(Repository):
    """A repository under a prefix of an object store."""

    def __init__(self, url: str) -> None:
        scheme = url.partition("://")[0]
        if scheme not in (*EXTRAS, "memory"):
            raise UsageError(
                f"{url}: a repository is a folder, or an s3://, gs:// or memory:// URL"
            )
        self.location = url.rstrip("/")
        self.store = Store(url)

    # -- reading ---------------------------------------------------------------------------

    def models(self) -> list[str]:
        names = []
        for name in self.store.children(""):
            try:
                check_model_name(name)
            except UsageError:
                continue
            if self.committed(name):
                names.append(name)
        return sorted(names)

    def versions(self, model: str) -> list[int]:
        versions = self.committed(check_model_name(model))
        if not versions:
            raise NotFoundError(f"model {model!r} not found in {self.location}")
        return versions

    def committed(self, model: str) -> list[int]:
        """The versions of MODEL with a manifest (one listing of the model's prefix)."""
        found = set()
        for key in self.store.below(model):
            number, _, rest = key.partition("/")
            if rest == MANIFEST_FILE and VERSION.fullmatch(number):
                found.add(int(number))
        return sorted(found)

    def read_bytes(self, model: str, relative: str, *, label: str = "") -> bytes:
        confined.check_relative(relative)
        shown = f"{label or model}: {relative}"
        data = self.store.read(f"{check_model_name(model)}/{relative}")
        if data is None:
            raise confined.MissingFile(f"{shown} is missing")
        return data

    def files(self, model: str, version: int) -> list[str]:
        return sorted(self.store.below(f"{check_model_name(model)}/{version}"))

    # -- writing ---------------------------------------------------------------------------

    def update_state(self, model: str, change: Callable[[ModelState], None]) -> ModelState:
        """Read ``model.json`` and its version tag, change it, and write it only if it is still
        that one (else ``Conflict``: another change landed in between)."""
        self._check_writable()
        key = f"{check_model_name(model)}/{MODEL_STATE_FILE}"
        data, tag = self.store.read_tagged(key)
        state = ModelState() if data is None else parse_state(model, data)
        before = copy.deepcopy(state.to_dict())
        change(state)
        if state.to_dict() == before:
            return state
        try:
            self.store.swap(key, _state_bytes(state), tag)
        except StaleWrite:
            raise Conflict(
                f"model {model!r} changed while this change was being made (another "
                "promote, rollback or retire landed first); nothing was changed: run it again"
            ) from None
        return state

    def publish(self, model: str, write: Callable[[Path], Manifest]) -> Manifest:
        """Claim a number, upload the files, create the manifest last (see the module)."""
        import tempfile

        check_model_name(model)
        self._check_writable()
        with tempfile.TemporaryDirectory(prefix="mserve-publish-") as folder:
            staging = Path(folder)
            manifest = write(staging)
            manifest.model = model
            files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
            manifest.files = {str(p.relative_to(staging)): sha256_file(p) for p in files}
            manifest.version = number = self._claim(model)
            for path in files:
                self.store.create(f"{model}/{number}/{path.relative_to(staging)}", path)
            manifest.write(staging)
            self.store.create(f"{model}/{number}/{MANIFEST_FILE}", staging / MANIFEST_FILE)
        self._raise_last_version(model, number)
        return manifest

    def _claim(self, model: str) -> int:
        """The next version number, claimed by a create-only write of ``.claims/<N>``."""
        taken = [0, self.state(model).last_version]
        for key in self.store.below(model):
            head, _, rest = key.partition("/")
            if head == CLAIMS and VERSION.fullmatch(rest):
                taken.append(int(rest))
            elif VERSION.fullmatch(head):
                taken.append(int(head))
        number = max(taken) + 1
        claim = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
        while True:
            try:
                self.store.create(f"{model}/{CLAIMS}/{number}", claim.encode())
            except FileExistsError:
                number += 1  # another writer has it
                continue
            return number

    def _raise_last_version(self, model: str, number: int) -> None:
        key = f"{model}/{MODEL_STATE_FILE}"
        for _ in range(CAS_RETRIES):
            data, tag = self.store.read_tagged(key)
            state = ModelState() if data is None else parse_state(model, data)
            if state.last_version >= number:
                return
            state.last_version = number
            try:
                self.store.swap(key, _state_bytes(state), tag)
            except StaleWrite:
                continue
            return
        raise RepositoryError(f"{model}: model.json kept changing; last_version not raised")

    def _check_writable(self) -> None:
        if self.location not in _HONOURING:  # once per process and store
            self.store.check_conditional_writes(self.location)
            _HONOURING.add(self.location)


def _state_bytes(state: ModelState) -> bytes:
    return (json.dumps(state.to_dict(), indent=2, sort_keys=True) + "\n").encode()


# -- one store, and its conditional writes ------------------------------------------------------


_MEMORY_LOCK = threading.Lock()  # memory:// has no conditions of its own: they are made here


class Store:
    """The objects under one URL prefix, with create-only writes and compare-and-swap. Keys
    are relative to the prefix."""

    def __init__(self, url: str) -> None:
        self.scheme = url.partition("://")[0]
        with _reaching(url):
            self.fs, root = _filesystem(url)
        self.root = root.rstrip("/")
        self.url = url

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def children(self, key: str) -> list[str]:
        """The names one level below KEY (a listing with a delimiter)."""
        with _reaching(self.url):
            try:
                entries = self.fs.ls(self._path(key), detail=False)
            except FileNotFoundError:
                return []
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries]

    def below(self, key: str) -> list[str]:
        """Every object below KEY, relative to it (one listing, no delimiter)."""
        base = self._path(key).strip("/") + "/"
        with _reaching(self.url):
            try:
                found = self.fs.find(self._path(key))
            except FileNotFoundError:
                return []
        return [
            path.lstrip("/")[len(base) :] for path in found if path.lstrip("/").startswith(base)
        ]

    def read(self, key: str) -> bytes | None:
        with _reaching(self.url):
            try:
                return bytes(self.fs.cat_file(self._path(key)))
            except FileNotFoundError:
                return None

    def read_tagged(self, key: str) -> tuple[bytes | None, str | None]:
        """KEY's content and a tag of that content for ``swap`` (None, None: no such object).
        The tag is read before and after the content, and must be the same."""
        for _ in range(CAS_RETRIES):
            before = self.tag(key)
            if before is None:
                return None, None
            data = self.read(key)
            if data is not None and self.tag(key) == before:
                return data, before
        raise RepositoryError(f"{key} kept changing while it was read")

    def tag(self, key: str) -> str | None:
        """A tag of KEY's current content (ETag, generation): None when there is no KEY."""
        if self.scheme == "memory":
            data = self.read(key)
            return None if data is None else hashlib.sha256(data).hexdigest()
        with _reaching(self.url):
            try:
                info = self.fs.info(self._path(key))
            except FileNotFoundError:
                return None
        tag = info.get("generation") if self.scheme in ("gs", "gcs") else info.get("ETag")
        return None if tag is None else str(tag)

    def create(self, key: str, data: bytes | Path) -> None:
        """Write KEY only if no object has that name (FileExistsError if one has). A retried
        request whose first attempt landed finds its own bytes there: that is success."""
        content = data.read_bytes() if isinstance(data, Path) else data
        path = self._path(key)
        try:
            if self.scheme == "memory":
                with _MEMORY_LOCK:
                    if self.fs.exists(path):
                        raise FileExistsError(key)
                    self.fs.pipe_file(path, content)
                return
            with _reaching(self.url, conditional=True):
                self.fs.pipe_file(path, content, mode="create")
        except FileExistsError:
            if self.scheme != "memory" and self.read(key) == content:
                return
            raise FileExistsError(key) from None

    def swap(self, key: str, data: bytes, tag: str | None) -> None:
        """Write KEY only if its tag is still TAG (None: only if there is no KEY); else
        ``StaleWrite``."""
        if tag is None:
            try:
                self.create(key, data)
            except FileExistsError:
                raise StaleWrite(key) from None
            return
        path = self._path(key)
        if self.scheme == "memory":
            with _MEMORY_LOCK:
                if self.tag(key) != tag:
                    raise StaleWrite(key)
                self.fs.pipe_file(path, data)
            return
        try:
            with _reaching(self.url, conditional=True):
                if self.scheme == "s3":
                    self.fs.pipe_file(path, data, IfMatch=tag)
                else:
                    self._gcs_swap(path, data, tag)
        except FileExistsError:
            raise StaleWrite(key) from None

    def _gcs_swap(self, path: str, data: bytes, generation: str) -> None:
        bucket, _, name = path.partition("/")
        self.fs.call(
            "POST",
            f"{self.fs._location}/upload/storage/v1/b/{bucket}/o",
            uploadType="media",
            name=name,
            ifGenerationMatch=generation,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            json_out=True,
        )  # a 412 (another generation) is raised by gcsfs as FileExistsError

    def delete(self, key: str) -> None:
        with _reaching(self.url), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def check_conditional_writes(self, location: str) -> None:
        """Refuse (EnvironmentProblem) a store that lets a second create-only write, or a
        stale compare-and-swap, through: writing there would not be safe."""
        if self.scheme == "memory":
            return
        probe = f".mserve-probe-{secrets.token_hex(8)}"
        self.create(probe, b"1")
        try:
            second = None
            try:
                self.create(probe, b"2")
            except FileExistsError:
                second = "refused"
            stale = None
            try:
                self.swap(probe, b"3", '"0"' if self.scheme == "s3" else "1")
            except StaleWrite:
                stale = "refused"
        finally:
            self.delete(probe)
        if second is None or stale is None:
            what = "a second create-only write" if second is None else "a stale conditional write"
            raise EnvironmentProblem(
                f"{location}: the store accepted {what}, so it does not honour conditional "
                "writes; mserve reads from it but will not write to it"
            )


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of URL and the path of its prefix: no cached instances or
    listings (another process writes too), and the libraries' own logs quiet (a failure is
    reported once, by mserve, in one line)."""
    import fsspec

    for name in ("fsspec", "s3fs", "gcsfs", "botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    scheme = url.partition("://")[0]
    options: dict[str, Any] = {"skip_instance_cache": True}
    if scheme == "s3":
        _require("s3fs", "s3")
        options.update(use_listings_cache=False, config_kwargs={"connect_timeout": 5})
    elif scheme in ("gs", "gcs"):
        _require("gcsfs", "gcs")
        # the plain JSON-API filesystem: gcsfs's default one first probes each bucket over gRPC
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(use_listings_cache=False, **options)
        return fs, str(fs._strip_protocol(url))
    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, str(root)


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(module, extra)


@contextlib.contextmanager
def _reaching(url: str, *, conditional: bool = False) -> Iterator[None]:
    """A store's failure as one line (its credentials never appear in it). FileNotFoundError
    and FileExistsError pass: callers read them. With CONDITIONAL, a refused precondition
    is a FileExistsError, however the library says it."""
    try:
        yield
    except (FileNotFoundError, FileExistsError, MissingExtraError):
        raise
    except Exception as exc:
        if conditional and _precondition_failed(exc):
            raise FileExistsError(str(exc)) from None
        raise StoreUnreachable(f"{url}: {_reason(exc)}") from None


def _precondition_failed(exc: BaseException) -> bool:
    """Whether EXC (or its cause) is a store's refusal of a write's condition."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                return True
    return False


def _reason(exc: BaseException) -> str:
    """Why a store call failed, in words: the library's message, on one line, without the
    exception's class."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict) and "Error" in response:
            detail = response["Error"]
            return f"{detail.get('Code', 'error')}: {detail.get('Message', '')}".strip(": ")
    text = " ".join(str(exc).split()) or "the store did not answer"
    return text[:300]
