"""Which versions are served, and their loading: the repository is polled, new versions load in
the background, and the served set is replaced in one assignment, so a request sees either the
old set or the new one. A version dropped from the set is freed when the last request holding
it finishes.

Faults stay local: whatever fails loading one version (or reading one model's files) marks that
version (or model) failed, with a reason fit for clients, one log line and one count per change,
never per poll; polling, start-up and the other models go on. While versions load, their state
says so (START, then LOADING), so readiness is honest from the first moment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mserve import confined
from mserve.errors import MserveError, NotFoundError, NotReady
from mserve.providers import choose
from mserve.repository import (
    STABLE,
    LocalRepository,
    ModelState,
    OneModelRepository,
    Repository,
    default_version,
)
from mserve.runtime import ModelRunner
from mserve.stores import StoreRepository
from mserve.verified import open_model

from .canary import Route
from .client_safe import Redactor, load_failure
from .mirror import Mirror
from .served import ServedVersion
from .settings import BatchSettings, ServerSettings

if TYPE_CHECKING:
    pass

log = logging.getLogger("mserve.server")
UNLOADED = "unloaded through the repository API"


@dataclass(frozen=True)
class VersionStatus:
    """What TF Serving's status and the V2 repository index report for one version."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's states)
    error: str = ""


@dataclass
class Snapshot:
    """Everything requests read; replaced whole by each refresh."""

    served: dict[str, dict[int, ServedVersion]] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    status: dict[str, dict[int, VersionStatus]] = field(default_factory=dict)
    # Each model's default version, worked out by its first request without one.
    defaults: dict[str, ServedVersion] = field(default_factory=dict)
    # The repository state each model was last brought in line with (ModelState.fingerprint).
    applied: dict[str, str] = field(default_factory=dict)
    # Each model's canary, when this server has both of its versions (canary.py).
    routes: dict[str, Route] = field(default_factory=dict)


class ModelManager:
    def __init__(self, settings: ServerSettings, make_executor: Any) -> None:
        self.settings = settings
        # Where versions are loaded from (a folder), and the repository changes go to and are
        # read from: the same folder, or an object store whose versions a mirror copies there.
        self.repository: LocalRepository = (
            LocalRepository(settings.repository)
            if settings.model_name is None
            else OneModelRepository(settings.repository, settings.model_name)
        )
        self.source: Repository = self.repository
        self.mirror: Mirror | None = None
        if settings.source is not None:
            store = StoreRepository(settings.source)
            self.source = store
            self.mirror = Mirror(store, settings.repository, settings.version_policy)
        self.snapshot = Snapshot()
        self._make_executor = make_executor
        self.redact = Redactor(self.repository.root)
        # (model, version) -> (fingerprint of the files that failed, why): not retried until fixed
        self._failed: dict[tuple[str, int], tuple[str, str]] = {}
        # What cannot be read of the repository ("" for its root), logged once per change.
        self._unreadable: dict[str, str] = {}
        # (model, version, "loaded" | "failed") -> how many times: mserve_model_loads_total
        self.load_events: dict[tuple[str, str, str], int] = {}
        # Loaded ahead of a label move (promote, rollback); adopted by the next refresh.
        self._prepared: dict[tuple[str, int], ServedVersion] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- requests -------------------------------------------------------------------------

    def resolve(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> ServedVersion:
        snapshot = self.snapshot
        if version is None and label is None:
            served = snapshot.defaults.get(model)
            if served is not None:
                return served
        versions = snapshot.served.get(model)
        if versions is None:
            statuses = snapshot.status.get(model)
            if statuses is not None:
                if statuses and all(s.error == UNLOADED for s in statuses.values()):
                    raise NotFoundError(f"model '{model}' is {UNLOADED}")
                raise NotReady(f"model '{model}' has no version ready")
            raise NotFoundError(f"model '{model}' not found")
        if label is not None:
            labelled = snapshot.labels.get(model, {}).get(label)
            if labelled is None:
                raise NotFoundError(f"model '{model}' has no label '{label}'")
            version = labelled
        if version is None:
            served = versions[default_version(snapshot.labels.get(model, {}), versions)]
            snapshot.defaults[model] = served
            return served
        served = versions.get(version)
        if served is None:
            state = snapshot.status.get(model, {}).get(version)
            if state is not None and state.state != "END":
                raise NotReady(f"model '{model}' version {version} is {state.state.lower()}")
            raise NotFoundError(f"model '{model}' has no version {version} being served")
        return served

    # -- polling --------------------------------------------------------------------------

    def start(self) -> None:
        """The first read of the repository, then polling; neither stops at a fault."""
        self._refresh_safely()
        if not self._stop.is_set():  # a stop may come while the first read is under way
            self._thread = threading.Thread(target=self._poll, name="mserve-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            self._refresh_safely()

    def _refresh_safely(self) -> None:
        if self.mirror is not None:
            self.mirror.poll(self.settings.poll_interval_s)
        try:
            self.refresh()
        except Exception as exc:  # a bug; a bad poll must never stop polling (logged once)
            self._unreadable_now("", "repository poll failed", exc)

    def refresh(self, model: str | None = None) -> None:
        """Bring the served set (or one model's) in line with the repository."""
        with self._refresh_lock:
            old = self.snapshot
            if model is None:
                names = self._models()
                if names is None:  # the repository cannot be listed: serve what is served
                    return
                self._show_pending([n for n in names if n not in old.status])
                new = Snapshot()
                for name in names:
                    self._refresh_model(name, old, new)
                    self._publish_model(name, new)
            else:
                if self.mirror is not None:  # a change just made in the store
                    self.mirror.sync_model(model)
                new = Snapshot(
                    dict(old.served),
                    dict(old.labels),
                    dict(old.status),
                    applied=dict(old.applied),
                    routes=dict(old.routes),
                )
                for part in (new.served, new.labels, new.status, new.routes):
                    part.pop(model, None)
                if self.repository.model_dir(model).is_dir():
                    self._refresh_model(model, old, new)
            self._prepared.clear()
            self.snapshot = new
            for name, versions in old.served.items():
                for number, served in versions.items():
                    if new.served.get(name, {}).get(number) is not served:
                        # Freed when the last request holding it finishes (no explicit close).
                        log.info("unloading %s:%s", name, number)

    def prepare(self, model: str, version: int) -> ServedVersion:
        """Load ``version`` now, if it is not served, so that a label can move to it ready."""
        with self._refresh_lock:
            served = self.snapshot.served.get(model, {}).get(version)
            if served is None:
                if self.mirror is not None and version not in self._cached(model):
                    self.mirror.fetch(model, version)
                settings = self.settings.defaults.override(self.repository.state(model).settings)
                loaded = self._prepared.get((model, version)) or self._load(
                    model, version, settings
                )
                if isinstance(loaded, str):
                    which = f"model '{model}' version {version}"
                    why = loaded.removeprefix(f"{which}: ")
                    raise NotReady(f"{which} cannot be loaded: {why}")
                self._prepared[(model, version)] = served = loaded
            return served

    def _cached(self, model: str) -> list[int]:
        try:
            return self.repository.versions(model)
        except MserveError:
            return []

    def _models(self) -> list[str] | None:
        try:
            names = self.repository.models()
        except Exception as exc:
            self._unreadable_now("", "cannot read the repository", exc)
            return [] if isinstance(exc, NotFoundError) else None
        self._readable_again("")
        return names

    def _unreadable_now(self, what: str, context: str, exc: Exception) -> None:
        """Log that WHAT ("" for the repository, else a model) cannot be read, once per
        change; an unexpected exception with its traceback."""
        reason = str(exc)
        if self._unreadable.get(what) != reason:
            expected = isinstance(exc, MserveError | OSError)
            said = reason.removeprefix(f"{what}: ") if what else reason
            log.warning("%s: %s", context, said, exc_info=None if expected else exc)
            self._unreadable[what] = reason

    def _keep_unreadable(
        self, model: str, versions: list[int], exc: Exception, old: Snapshot, new: Snapshot
    ) -> None:
        self._unreadable_now(model, f"cannot read model {model}", exc)
        if model in old.served:
            new.served[model] = old.served[model]
        new.labels[model] = old.labels.get(model, {})
        if model in old.applied:
            new.applied[model] = old.applied[model]
        if model in old.routes:
            new.routes[model] = old.routes[model]
        # A model never read before shows its versions failed, with the reason.
        reason = self._model_problem(model, exc)
        unread = {v: VersionStatus(v, "END", reason) for v in versions}
        new.status[model] = old.status.get(model) or unread

    def _model_problem(self, model: str, exc: Exception) -> str:
        """Why MODEL cannot be read, in words fit for clients."""
        if not isinstance(exc, MserveError | OSError):
            return f"model '{model}' cannot be read (an unexpected error; see the server log)"
        text = str(exc) if isinstance(exc, MserveError) else f"{exc.filename}: {exc.strerror}"
        return f"model '{model}': {self.redact(text.removeprefix(f'{model}: '))}"

    def _readable_again(self, what: str) -> None:
        if self._unreadable.pop(what, None) is not None:
            log.info("%s can be read again", f"model {what}" if what else "the repository")

    def _show_pending(self, models: list[str]) -> None:
        """Publish models seen for the first time with their versions in START, before any
        loads: status views and readiness then say what is coming (at start-up, everything)."""
        pending = {model: self._starting(model) for model in models}
        if pending:
            current = self.snapshot
            self.snapshot = replace(current, status={**current.status, **pending}, defaults={})

    def _starting(self, model: str) -> dict[int, VersionStatus]:
        try:
            state = self.repository.state(model)
            versions = [] if state.unloaded else self.repository.versions(model)
        except Exception:  # reported by the refresh that follows
            return {}
        return {v: VersionStatus(v, "START") for v in versions if v not in state.retired}

    def _show_loading(self, model: str, version: int) -> None:
        current = self.snapshot
        statuses = {**current.status.get(model, {}), version: VersionStatus(version, "LOADING")}
        status = {**current.status, model: dict(sorted(statuses.items()))}
        self.snapshot = replace(current, status=status, defaults={})

    def _publish_model(self, model: str, new: Snapshot) -> None:
        """During a whole refresh, each model serves as soon as its own versions are loaded."""
        current = self.snapshot
        served = {k: v for k, v in current.served.items() if k != model}
        if model in new.served:
            served[model] = new.served[model]
        labels = {**current.labels, model: new.labels.get(model, {})}
        status = {**current.status, model: new.status.get(model, {})}
        applied = {**current.applied}
        if model in new.applied:
            applied[model] = new.applied[model]
        routes = {k: v for k, v in current.routes.items() if k != model}
        if model in new.routes:
            routes[model] = new.routes[model]
        self.snapshot = Snapshot(served, labels, status, applied=applied, routes=routes)

    def _refresh_model(self, model: str, old: Snapshot, new: Snapshot) -> None:
        versions: list[int] = []
        try:
            versions = self.repository.versions(model)
            state = self.repository.state(model)
            settings = self.settings.defaults.override(state.settings)
        except Exception as exc:  # this model stays as it was; the others go on
            self._keep_unreadable(model, versions, exc, old, new)
            return
        self._readable_again(model)
        new.applied[model] = state.fingerprint()
        if state.unloaded:  # taken out of service through the repository extension
            new.labels[model] = {}
            new.status[model] = {
                v: VersionStatus(v, "END", UNLOADED) for v in versions if v not in state.retired
            }
            return
        live = [v for v in versions if v not in state.retired]
        labelled = state.pinned
        latest = self.settings.version_policy.latest
        served: dict[int, ServedVersion] = {}
        status: dict[int, VersionStatus] = {}
        newest_served = 0
        # Newest first: "latest N" means the newest N versions that load, so a broken new version
        # leaves the one before it serving.
        for number in sorted(live, reverse=True):
            if latest is not None and newest_served >= latest and number not in labelled:
                continue
            current = old.served.get(model, {}).get(number) or self._prepared.get((model, number))
            if current is not None and current.settings == settings:
                loaded: ServedVersion | str = current
            else:
                if (model, number) not in self._failed:
                    self._show_loading(model, number)
                loaded = self._load(model, number, settings)
            if isinstance(loaded, ServedVersion):
                served[number] = loaded
                status[number] = VersionStatus(number, "AVAILABLE")
                newest_served += 1
            else:
                status[number] = VersionStatus(number, "END", loaded)
        labels = {}
        for label, number in state.labels.items():
            if number in served:
                labels[label] = number
                continue
            # The label moved to a version this server cannot load: it keeps the one before.
            before = old.labels.get(model, {}).get(label, -1)
            kept = old.served.get(model, {}).get(before)
            if kept is not None and before not in state.retired:
                served[before] = kept
                status[before] = VersionStatus(before, "AVAILABLE")
                labels[label] = before
        if served:
            new.served[model] = served
        new.labels[model] = labels
        new.status[model] = dict(sorted(status.items()))
        if (route := _route(state, labels, served)) is not None:
            new.routes[model] = route

    def _load(self, model: str, version: int, settings: BatchSettings) -> ServedVersion | str:
        """A loaded version, or why it cannot be served (not retried until its files change)."""
        key = (model, version)
        try:
            manifest = self.repository.manifest(model, version)
            folder = self.repository.version_dir(model, version)
            # every file the manifest lists (external data too) and the settings it loads with
            # (its providers, its threads): fixing any one is a retry
            fingerprint = f"{settings};" + ";".join(
                f"{name}:{sha256}:{_stamp(folder, name)}"
                for name, sha256 in sorted(manifest.files.items())
            )
        except Exception as exc:  # whatever it is, it stays with this version
            return self._failure(key, "", exc)
        failed = self._failed.get(key)
        if failed is not None and failed[0] == fingerprint:
            return failed[1]
        started = time.perf_counter()
        try:
            # Every file read once, confined and checked; onnxruntime gets those bytes.
            _, verified = open_model(self.repository, model, version, manifest)
            runner = ModelRunner.open_verified(
                verified,
                threads=settings.threads or self.settings.defaults.threads,
                providers=choose(settings.providers),
            )
            executor = self._make_executor(model, version, runner, settings)
        except Exception as exc:  # whatever it is, it stays with this version
            return self._failure(key, fingerprint, exc)
        self._failed.pop(key, None)
        self._count(key, "loaded")
        log.info("loaded %s:%s", model, version)
        seconds = time.perf_counter() - started
        return ServedVersion(model, version, manifest, runner, settings, executor, seconds)

    def _failure(self, key: tuple[str, int], fingerprint: str, exc: Exception) -> str:
        """Record why KEY cannot load; logged and counted once per change (new files or a new
        reason), not per poll. The reply's reason names no host path; the log has it all."""
        failure = load_failure(*key, exc, self.redact)
        if self._failed.get(key) != (fingerprint, failure.reason):
            trace = None if failure.expected else exc
            log.error("cannot load %s:%s: %s", *key, failure.detail, exc_info=trace)
            self._count(key, "failed")
        self._failed[key] = (fingerprint, failure.reason)
        return failure.reason

    def _count(self, key: tuple[str, int], outcome: str) -> None:
        event = (key[0], str(key[1]), outcome)
        self.load_events[event] = self.load_events.get(event, 0) + 1


def _route(
    state: ModelState, labels: dict[str, int], served: dict[int, ServedVersion]
) -> Route | None:
    """The model's canary, when this server serves its label at the baseline, and the
    candidate (else every request to the label goes where the label points)."""
    canary = state.canary
    if canary is None or labels.get(canary.label) != canary.baseline:
        return None
    if canary.candidate not in served:
        return None
    baseline, candidate = served[canary.baseline], served[canary.candidate]
    return Route(canary, baseline, candidate, default=canary.label == STABLE)


def _stamp(folder: Path, name: str) -> int:
    """When FOLDER/NAME last changed (-1: missing, or a name that leaves the folder)."""
    try:
        return os.lstat(folder / confined.check_relative(name)).st_mtime_ns
    except (OSError, confined.UnsafeFile):
        return -1
