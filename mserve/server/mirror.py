"""A server on an object store serves from a local copy of what it serves: the mirror.

The store is polled cheaply: one listing of the top level (which models exist) and one
``HEAD`` of each model's ``model.json``. Every publish and every state change rewrites
``model.json`` (a publish raises its ``last_version``), so a model whose ``model.json`` is
unchanged is not looked at further; every ``FULL_EVERY``-th poll looks at each model whole all
the same (a publisher that died between its manifest and ``model.json`` left a version only a
listing finds). A changed model is listed once; the versions this server will serve (every
labelled one and the newest ``latest:N`` of the rest, none when it is unloaded) are
downloaded into the cache folder (``--cache-dir``), each file checked against the sha256 its
manifest lists, into a staging folder renamed into place; ``model.json`` is copied last.
Versions no longer served are deleted from the cache. The server itself then reads the cache
as it reads any folder (``LocalRepository``), and checks every byte again as it loads.

When the store cannot be reached the server goes on serving what it has, says so (the
``mserve_repository_up`` metric, the admin view, one log line per change) and tries again
after 2, 4, ... up to 8 poll intervals.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from mserve import confined
from mserve.errors import MserveError, RepositoryError
from mserve.manifest import MANIFEST_FILE
from mserve.reference import VERSION, check_model_name
from mserve.repository import MODEL_STATE_FILE, ModelState, parse_state
from mserve.stores import StoreRepository, StoreUnreachable

from .settings import VersionPolicy

log = logging.getLogger("mserve.server")

FULL_EVERY = 30  # polls between two looks at every model whole
STAGING = ".staging-"
BACKOFF_MAX = 8  # poll intervals


class Mirror:
    """The versions a server serves from an object store, kept in a local folder."""

    def __init__(self, source: StoreRepository, cache: Path, policy: VersionPolicy) -> None:
        self.source = source
        self.cache = cache
        self.policy = policy
        self.tags: dict[str, str | None] = {}  # model -> the model.json tag last copied
        self.polls = 0
        self.error = ""  # why the store cannot be reached now ("" when it can)
        self.failures = 0  # polls failed in a row
        self.next_try = 0.0  # monotonic: no poll before this (backing off)
        self.last_sync = 0.0  # time.time() of the last poll that reached the store
        self.failures_seen: dict[str, str] = {}  # model or version -> why it cannot be copied
        # one copy at a time: the poll's, or an admin change's (manager.refresh, prepare)
        self.lock = threading.RLock()
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)

    def poll(self, interval: float) -> None:
        """One cheap poll (see the module); never raises: a failure is kept in ``error``."""
        if time.monotonic() < self.next_try:
            return
        try:
            self.sync(full=self.polls % FULL_EVERY == 0)
        except MserveError as exc:
            self.failures += 1
            wait = interval * min(2**self.failures, BACKOFF_MAX)
            self.next_try = time.monotonic() + wait
            if str(exc) != self.error:
                log.warning("the model repository cannot be reached: %s", exc)
            self.error = str(exc)
            return
        self.polls += 1
        self.last_sync = time.time()
        if self.error:
            log.info("the model repository can be reached again")
        self.error, self.failures, self.next_try = "", 0, 0.0

    def sync(self, *, full: bool = True) -> None:
        """Bring the cache in line with the store (every model when FULL)."""
        with self.lock:
            self._sync(full)

    def _sync(self, full: bool) -> None:
        store = self.source.store
        names = set()
        for name in store.children(""):
            try:
                names.add(check_model_name(name))
            except MserveError:
                continue
        for name in sorted(names):
            tag = store.tag(f"{name}/{MODEL_STATE_FILE}")
            if full or name not in self.tags or tag != self.tags[name]:
                try:
                    self._sync_model(name)
                except StoreUnreachable:
                    raise
                except MserveError as exc:  # this model only: the others go on
                    self._failed(name, exc)
        for gone in {p.name for p in self.cache.iterdir() if p.is_dir()} - names:
            shutil.rmtree(self.cache / gone, ignore_errors=True)
            self.tags.pop(gone, None)

    def sync_model(self, model: str) -> None:
        """Copy what MODEL serves into the cache, and its ``model.json`` last."""
        with self.lock:
            self._sync_model(model)

    def _sync_model(self, model: str) -> None:
        store = self.source.store
        data, tag = store.read_tagged(f"{model}/{MODEL_STATE_FILE}")
        state = ModelState() if data is None else parse_state(model, data)
        versions = self.source.committed(model)
        folder = self.cache / model
        folder.mkdir(exist_ok=True)
        wanted = self.served(state, versions)
        for version in wanted:
            if not (folder / str(version) / MANIFEST_FILE).is_file():
                try:
                    self._fetch(model, version)
                except StoreUnreachable:
                    raise
                except MserveError as exc:  # this version only: not served, said once
                    self._failed(f"{model}:{version}", exc)
        if data is not None:
            _replace(folder / MODEL_STATE_FILE, data)
        for entry in folder.iterdir():
            stale = VERSION.fullmatch(entry.name) and int(entry.name) not in wanted
            if entry.is_dir() and (stale or entry.name.startswith(STAGING)):
                shutil.rmtree(entry, ignore_errors=True)
        self.tags[model] = tag

    def _failed(self, what: str, exc: MserveError) -> None:
        if self.failures_seen.get(what) != str(exc):
            log.error("cannot copy %s from the model repository: %s", what, exc)
            self.failures_seen[what] = str(exc)

    def served(self, state: ModelState, versions: list[int]) -> list[int]:
        """The versions a server serves (manager.py's rule): none of an unloaded model, else
        every labelled one (and a canary's candidate) and the newest ``latest`` of the others
        (all with ``all``)."""
        if state.unloaded:
            return []
        labelled = {v for v in state.pinned if v in versions}
        live = [v for v in versions if v not in state.retired]
        newest = live if self.policy.latest is None else live[-self.policy.latest :]
        return sorted(labelled | set(newest))

    def fetch(self, model: str, version: int) -> None:
        """Download a version into the cache: every file its manifest lists, checked against
        its sha256, into a staging folder renamed into place (a reader never sees half)."""
        with self.lock:
            self._fetch(model, version)

    def _fetch(self, model: str, version: int) -> None:
        where = f"{model}:{version}"
        manifest_bytes = self.source.read_bytes(model, f"{version}/{MANIFEST_FILE}", label=where)
        manifest = self.source.manifest(model, version)
        staging = self.cache / model / f"{STAGING}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            for relative, sha256 in manifest.files.items():
                confined.check_relative(relative)  # never written outside the version
                data = self.source.read_bytes(model, f"{version}/{relative}", label=where)
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise RepositoryError(f"{where}: {relative} does not match its manifest")
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            staging.mkdir(parents=True, exist_ok=True)
            (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
            target = self.cache / model / str(version)
            shutil.rmtree(target, ignore_errors=True)  # an earlier, broken copy
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def default_cache(url: str) -> Path:
    """Where a server keeps its copy of URL's versions: one folder per repository URL, under
    ``$XDG_CACHE_HOME/mserve`` (``~/.cache/mserve``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mserve" / hashlib.sha256(url.encode()).hexdigest()[:16]
