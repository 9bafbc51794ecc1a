"""Version lifecycle: promote (move a label), rollback (move it back), retire, and taking a model
out of service and back (the V2 repository extension's unload and load).

The server's admin API and ``mserve promote --repo`` run this same code, so a change made either
way passes the same gates and leaves the same audit entry in ``model.json``. Each change is one
``model.json`` transaction under the model's write lock: concurrent changes are serialized, none
is lost, and every server polling the repository converges on the result. ``prepare`` (a
server's "load this version and make it ready") runs inside the transaction, before the label
moves, so a label never names a version a server could not load.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .canary import DEFAULT_TOLERANCE, Canary, check_header, check_tolerance, check_weight
from .errors import Conflict, NotFoundError, UsageError, ValidationError
from .manifest import ci_provenance
from .reference import check_label
from .repository import STABLE, ModelState, Repository
from .signature import compare_signatures

MAX_ACTOR_LENGTH = 200
Prepare = Callable[[str, int], object]


@dataclass(frozen=True)
class LabelChange:
    """One lifecycle operation's outcome; ``changed`` is False when it was already so."""

    model: str
    operation: str  # promote, rollback, retire, load, unload, canary, abort
    changed: bool
    label: str | None = None
    from_version: int | None = None  # where the label was
    to_version: int | None = None  # where it is now
    version: int | None = None  # the version retired
    actor: str = ""
    time: str = ""
    detail: str | None = None  # a canary's split, an abort's reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "operation": self.operation,
            "changed": self.changed,
            "label": self.label,
            "from": self.from_version,
            "to": self.to_version,
            "version": self.version,
            "actor": self.actor,
            "time": self.time,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelChange:
        renamed = {"from": "from_version", "to": "to_version"}
        return cls(**{renamed.get(k, k): v for k, v in data.items()})

    def describe(self) -> str:
        if self.operation in ("promote", "rollback"):
            before = "none" if self.from_version is None else self.from_version
            moved = f"'{self.label}' {before} -> {self.to_version}"
            already = "" if self.changed else " (already)"
            return f"{self.operation} {self.model}: {moved}{already}"
        if self.operation == "canary":
            return f"canary {self.model}: {self.detail} (baseline {self.from_version})"
        if self.operation == "abort":
            why = f": {self.detail}" if self.detail else ""
            return f"canary of {self.model} aborted, '{self.label}' stays {self.to_version}{why}"
        if self.operation == "retire":
            done = "retired" if self.changed else "was already retired"
            return f"{self.model}:{self.version} {done}"
        return f"{self.operation} {self.model}" + ("" if self.changed else " (already)")


def default_actor(environ: dict[str, str] | None = None) -> str:
    """Who is making a change: the CI system's user and job, else user@host."""
    env = dict(os.environ) if environ is None else environ
    for variable in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR"):
        if env.get(variable):
            user = env[variable]
            break
    else:
        try:
            user = f"{getpass.getuser()}@{socket.gethostname()}"
        except (KeyError, OSError):  # no passwd entry (containers)
            user = f"uid {os.getuid()}@{socket.gethostname()}"
    ci = ci_provenance(env)
    job = ci.get("ci_job_url") or ci.get("ci_job_id")
    return check_actor(f"{user} ({ci['ci']} {job})" if job else user)


def check_actor(actor: str) -> str:
    if not actor.isprintable() or len(actor) > MAX_ACTOR_LENGTH:
        raise UsageError(f"an actor is printable text of at most {MAX_ACTOR_LENGTH} characters")
    return actor


def previous_version(history: list[dict[str, Any]], label: str, current: int) -> int | None:
    """The version ``label`` named before ``current``: promotes push, rollbacks pop."""
    stack: list[int] = []
    for entry in history:
        if entry.get("label") != label or not isinstance(entry.get("to"), int):
            continue
        if entry.get("operation") == "promote":
            if not stack and isinstance(entry.get("from"), int):
                stack.append(entry["from"])
            stack.append(entry["to"])
        elif entry.get("operation") == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry["to"]:
                stack.append(entry["to"])
    if not stack or stack[-1] != current:  # model.json was edited by hand since
        stack.append(current)
    return stack[-2] if len(stack) > 1 else None


class Lifecycle:
    def __init__(
        self, repository: Repository, *, via: str = "repository", prepare: Prepare | None = None
    ) -> None:
        self.repository = repository
        self.via = via
        self.prepare = prepare or (lambda model, version: None)

    def promote(
        self,
        model: str,
        version: int,
        *,
        label: str = STABLE,
        actor: str,
        allow_breaking: bool = False,
    ) -> LabelChange:
        """Move ``label`` to ``version``, if it validates and clients of the label's current
        version can call it (``allow_breaking`` skips the second gate)."""
        check_label(label)
        self._require_version(model, version)
        if self.repository.state(model).labels.get(label) != version:
            self._require_valid(model, version)  # slow: outside the lock

        def apply(state: ModelState) -> LabelChange:
            current = state.labels.get(label)
            if current == version:
                return self._change(
                    model,
                    "promote",
                    False,
                    label=label,
                    from_version=current,
                    to_version=version,
                    actor=actor,
                )
            if version in state.retired:
                raise Conflict(f"{model}:{version} is retired; only live versions are promoted")
            _refuse_during_canary(state, model, label)
            if current is not None and not allow_breaking:
                self._require_compatible(model, current, version, label)
            return self._move(state, model, "promote", label, version, actor)

        return self._transaction(model, apply)

    def rollback(self, model: str, *, label: str = STABLE, actor: str) -> LabelChange:
        """Move ``label`` back to the version it named before (its history is a stack)."""
        check_label(label)
        self._require_model(model)

        def apply(state: ModelState) -> LabelChange:
            current = state.labels.get(label)
            if current is None:
                raise NotFoundError(f"model '{model}' has no label '{label}'")
            _refuse_during_canary(state, model, label)
            target = previous_version(state.history, label, current)
            if target is None:
                raise Conflict(f"'{label}' of {model} has no earlier version to roll back to")
            if target in state.retired:
                raise Conflict(f"cannot roll '{label}' back to {model}:{target}: it is retired")
            if target not in self.repository.versions(model):
                raise Conflict(f"cannot roll '{label}' back to {model}:{target}: it was deleted")
            return self._move(state, model, "rollback", label, target, actor)

        return self._transaction(model, apply)

    def retire(self, model: str, version: int, *, actor: str) -> LabelChange:
        """Stop serving ``version`` for good; refused while a label names it."""
        versions = self._require_version(model, version)

        def apply(state: ModelState) -> LabelChange:
            if version in state.retired:
                return self._change(model, "retire", False, version=version, actor=actor)
            holders = sorted(name for name, held in state.labels.items() if held == version)
            canary = state.canary
            if canary is not None and canary.candidate == version:
                raise Conflict(
                    f"{model}:{version} is the candidate of canary '{canary.id}'; "
                    "promote or abort it first"
                )
            if holders:
                names = ", ".join(f"'{name}'" for name in holders)
                raise Conflict(
                    f"{model}:{version} carries {names}; promote another version there first"
                )
            if not [v for v in versions if v != version and v not in state.retired]:
                raise Conflict(f"{model}:{version} is the last live version of {model}")
            state.retired.append(version)
            return self._change(model, "retire", True, version=version, actor=actor)

        return self._transaction(model, apply)

    def canary(
        self,
        model: str,
        version: int,
        *,
        label: str = STABLE,
        weight: float = 10.0,
        header: str | None = None,
        shadow: bool = False,
        tolerance: float = DEFAULT_TOLERANCE,
        actor: str,
        allow_breaking: bool = False,
    ) -> LabelChange:
        """Start a canary: ``weight`` percent of ``label``'s requests to ``version`` (which
        passes promote's gates), sticky on ``header``, and with ``shadow`` a copy of the rest."""
        check_label(label)
        check_weight(weight, shadow=shadow)
        if header is not None:
            check_header(header.lower())
        check_tolerance(tolerance)
        self._require_version(model, version)
        self._require_valid(model, version)  # slow: outside the lock

        def apply(state: ModelState) -> LabelChange:
            if state.canary is not None:
                raise Conflict(
                    f"canary '{state.canary.id}' of {model} is running "
                    f"({state.canary.describe()}); promote or abort it first"
                )
            if state.unloaded:
                raise Conflict(f"model '{model}' is unloaded; load it before a canary")
            baseline = state.labels.get(label)
            if baseline is None:
                raise NotFoundError(f"model '{model}' has no label '{label}'")
            if baseline == version:
                raise Conflict(f"'{label}' of {model} already names version {version}")
            if version in state.retired:
                raise Conflict(f"{model}:{version} is retired; only live versions are canaries")
            if not allow_breaking:
                self._require_compatible(model, baseline, version, label)
            self.prepare(model, version)
            change = self._change(
                model,
                "canary",
                True,
                label=label,
                from_version=baseline,
                to_version=version,
                actor=actor,
            )
            stamp = change.time.replace("-", "").replace(":", "").split(".")[0]
            canary = Canary(
                f"{stamp}-{version}",
                label,
                baseline,
                version,
                weight,
                None if header is None else header.lower(),
                shadow,
                tolerance,
            )
            state.canary = canary
            return replace(change, detail=canary.describe())

        return self._transaction(model, apply)

    def canary_promote(self, model: str, *, actor: str) -> LabelChange:
        """End the canary: its label moves to the candidate (a promote, rolled back as one)."""
        self._require_model(model)

        def apply(state: ModelState) -> LabelChange:
            canary = self._running(state, model)
            state.canary = None
            change = self._move(state, model, "promote", canary.label, canary.candidate, actor)
            return replace(change, detail=f"canary '{canary.id}'")

        return self._transaction(model, apply)

    def canary_abort(self, model: str, *, actor: str, reason: str = "") -> LabelChange:
        """End the canary: the label's requests all go to the baseline again."""
        self._require_model(model)
        if not reason.isprintable() or len(reason) > MAX_ACTOR_LENGTH:
            raise UsageError(f"a reason is printable text of at most {MAX_ACTOR_LENGTH} characters")

        def apply(state: ModelState) -> LabelChange:
            canary = self._running(state, model)
            state.canary = None
            return self._change(
                model,
                "abort",
                True,
                label=canary.label,
                from_version=canary.candidate,
                to_version=canary.baseline,
                actor=actor,
                detail=reason or None,
            )

        return self._transaction(model, apply)

    @staticmethod
    def _running(state: ModelState, model: str) -> Canary:
        if state.canary is None:
            raise Conflict(f"model '{model}' has no canary running")
        return state.canary

    def set_serving(self, model: str, serving: bool, *, actor: str) -> LabelChange:
        """Take a whole model out of service (``unload``) or back in (``load``)."""
        self._require_model(model)
        operation = "load" if serving else "unload"

        def apply(state: ModelState) -> LabelChange:
            changed = state.unloaded == serving
            state.unloaded = not serving
            return self._change(model, operation, changed, actor=actor)

        return self._transaction(model, apply)

    # -- pieces -----------------------------------------------------------------------------

    def _move(  # noqa: PLR0917 (one call shape, two callers)
        self, state: ModelState, model: str, operation: str, label: str, target: int, actor: str
    ) -> LabelChange:
        """Move ``label`` to ``target`` once this process can serve it (``prepare``)."""
        if state.unloaded:
            raise Conflict(f"model '{model}' is unloaded; load it before moving its labels")
        current = state.labels.get(label)
        self.prepare(model, target)
        state.labels[label] = target
        return self._change(
            model,
            operation,
            True,
            label=label,
            from_version=current,
            to_version=target,
            actor=actor,
        )

    def _transaction(self, model: str, apply: Callable[[ModelState], LabelChange]) -> LabelChange:
        changes: list[LabelChange] = []

        def update(state: ModelState) -> None:
            change = apply(state)
            if change.changed:  # the audit entry: the change without its model, and how
                entry = {"time": change.time, **change.to_dict(), "via": self.via}
                for key in ("model", "changed"):
                    del entry[key]
                state.history.append({k: v for k, v in entry.items() if v is not None})
            changes.append(change)

        self.repository.update_state(model, update)
        return changes[0]

    @staticmethod
    def _change(
        model: str,
        operation: str,
        changed: bool,
        *,
        label: str | None = None,
        from_version: int | None = None,
        to_version: int | None = None,
        version: int | None = None,
        actor: str = "",
        detail: str | None = None,
    ) -> LabelChange:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return LabelChange(
            model,
            operation,
            changed,
            label,
            from_version,
            to_version,
            version,
            check_actor(actor),
            now,
            detail,
        )

    def _require_model(self, model: str) -> list[int]:
        versions = self.repository.versions(model)
        if not versions:
            raise NotFoundError(f"model '{model}' has no versions")
        return versions

    def _require_version(self, model: str, version: int) -> list[int]:
        versions = self._require_model(model)
        if version not in versions:
            raise NotFoundError(f"model '{model}' has no version {version}")
        return versions

    def _require_valid(self, model: str, version: int) -> None:
        from .validation import validate  # onnx and a session: only when a gate runs

        failed = [c for c in validate(self.repository, model, version).checks if not c.passed]
        if failed:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise ValidationError(
                f"{model}:{version} does not validate: {failed[0].name}: {failed[0].detail}{more}"
            )

    def _require_compatible(self, model: str, current: int, version: int, label: str) -> None:
        old = self.repository.manifest(model, current).signature
        report = compare_signatures(old, self.repository.manifest(model, version).signature)
        if not report.compatible:
            first = report.breaking[0]
            raise Conflict(
                f"{model}:{version} breaks clients of {model}:{current} ('{label}'): "
                f"{first.where}: {first.message}; --allow-breaking promotes it anyway"
            )


def _refuse_during_canary(state: ModelState, model: str, label: str) -> None:
    canary = state.canary
    if canary is not None and canary.label == label:
        raise Conflict(
            f"canary '{canary.id}' of {model} runs on '{label}'; promote or abort it first "
            f"(mserve canary promote|abort)"
        )
