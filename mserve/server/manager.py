"""Which versions are served, and their loading: the repository is polled, new versions load in
the background, and the served set is replaced in one assignment, so a request sees either the
old set or the new one. A version that fails to load is reported and never disturbs the others;
a version dropped from the set is freed when the last request holding it finishes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mserve.errors import MserveError, NotFoundError, NotReady
from mserve.manifest import MODEL_FILE, Manifest
from mserve.protocol.tensors import Plan
from mserve.repository import Repository, default_version
from mserve.runtime import ModelRunner
from mserve.verified import open_model

from .batching import Inline
from .settings import BatchSettings, ServerSettings

if TYPE_CHECKING:
    from mserve.signature import Signature

    from .batching import Executor

log = logging.getLogger("mserve.server")
UNLOADED = "unloaded through the repository API"


@dataclass
class ServedVersion:
    model: str
    version: int
    manifest: Manifest
    runner: ModelRunner
    settings: BatchSettings
    executor: Executor
    load_seconds: float = 0.0

    @property
    def signature(self) -> Signature:
        return self.manifest.signature

    @cached_property
    def version_text(self) -> str:
        return str(self.version)

    @cached_property
    def plan(self) -> Plan:
        """What the codecs need of this version, worked out once."""
        return Plan.of(self.signature, self.runner.output_names)

    @cached_property
    def inline(self) -> Inline | None:
        """The executor, when it answers within the caller's turn (no batching)."""
        return self.executor if isinstance(self.executor, Inline) else None


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


class ModelManager:
    def __init__(self, settings: ServerSettings, make_executor: Any) -> None:
        self.settings = settings
        self.repository = Repository(settings.repository)
        self.snapshot = Snapshot()
        self._make_executor = make_executor
        # (model, version) -> (fingerprint of the files that failed, why): not retried until fixed
        self._failed: dict[tuple[str, int], tuple[str, str]] = {}
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
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="mserve-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # a bad poll must never stop polling
                log.exception("repository poll failed")

    def refresh(self, model: str | None = None) -> None:
        """Bring the served set (or one model's) in line with the repository."""
        with self._refresh_lock:
            old = self.snapshot
            if model is None:
                new = Snapshot()
                for name in self._models():
                    self._refresh_model(name, old, new)
            else:
                new = Snapshot(dict(old.served), dict(old.labels), dict(old.status))
                for part in (new.served, new.labels, new.status):
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
                settings = self.settings.defaults.override(self.repository.state(model).settings)
                loaded = self._prepared.get((model, version)) or self._load(
                    model, version, settings
                )
                if isinstance(loaded, str):
                    raise NotReady(f"model '{model}' version {version} cannot be loaded: {loaded}")
                self._prepared[(model, version)] = served = loaded
            return served

    def _models(self) -> list[str]:
        try:
            return self.repository.models()
        except MserveError as exc:
            log.warning("cannot read the repository: %s", exc)
            return []

    def _refresh_model(self, model: str, old: Snapshot, new: Snapshot) -> None:
        try:
            versions = self.repository.versions(model)
            state = self.repository.state(model)
            settings = self.settings.defaults.override(state.settings)
        except MserveError as exc:  # this model stays as it was; the others go on
            log.warning("%s: %s", model, exc)
            if model in old.served:
                new.served[model] = old.served[model]
            new.labels[model] = old.labels.get(model, {})
            new.status[model] = old.status.get(model, {})
            return
        if state.unloaded:  # taken out of service through the repository extension
            new.labels[model] = {}
            new.status[model] = {
                v: VersionStatus(v, "END", UNLOADED) for v in versions if v not in state.retired
            }
            return
        live = [v for v in versions if v not in state.retired]
        labelled = set(state.labels.values())
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
            loaded = (
                current
                if current is not None and current.settings == settings
                else (self._load(model, number, settings))
            )
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

    def _load(self, model: str, version: int, settings: BatchSettings) -> ServedVersion | str:
        """A loaded version, or why it cannot be served (not retried until its files change)."""
        key = (model, version)
        try:
            manifest = self.repository.manifest(model, version)
            path = self.repository.version_file(model, version, MODEL_FILE)
            fingerprint = f"{manifest.files.get(MODEL_FILE)}:{path.stat().st_mtime_ns}"
        except (MserveError, OSError) as exc:
            return self._failure(key, "", str(exc))
        failed = self._failed.get(key)
        if failed is not None and failed[0] == fingerprint:
            return failed[1]
        started = time.perf_counter()
        try:
            # Every file read once, confined and checked; onnxruntime gets those bytes.
            _, verified = open_model(self.repository, model, version, manifest)
            runner = ModelRunner.open_verified(verified, threads=settings.threads)
        except (MserveError, OSError) as exc:
            return self._failure(key, fingerprint, str(exc))
        self._failed.pop(key, None)
        log.info("loaded %s:%s", model, version)
        executor = self._make_executor(model, version, runner, settings)
        seconds = time.perf_counter() - started
        return ServedVersion(model, version, manifest, runner, settings, executor, seconds)

    def _failure(self, key: tuple[str, int], fingerprint: str, reason: str) -> str:
        if self._failed.get(key, ("", ""))[1] != reason:  # log each new reason once
            log.error("cannot load %s:%s: %s", *key, reason)
        self._failed[key] = (fingerprint, reason)
        return reason
