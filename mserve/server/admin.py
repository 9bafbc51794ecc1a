"""The admin API (mserve's own) and the KServe V2 repository extension, behind one bearer token.

    GET  /admin/models                     every model: versions, states, labels, retired, history
    GET  /admin/models/{m}                 one model
    POST /admin/models/{m}/promote         {"version": N, "label"?, "actor"?, "allow_breaking"?}
    POST /admin/models/{m}/rollback        {"label"?, "actor"?}
    POST /admin/models/{m}/retire          {"version": N, "actor"?}
    POST /admin/models/{m}/canary          {"version": N, "label"?, "weight"?, "header"?,
                                            "shadow"?, "tolerance"?, "actor"?, "allow_breaking"?}
    POST /admin/models/{m}/canary/promote  {"actor"?}
    POST /admin/models/{m}/canary/abort    {"actor"?, "reason"?}
    POST /v2/repository/index              {"ready"?: bool}
    POST /v2/repository/models/{m}/load    {"parameters"?: {...}}
    POST /v2/repository/models/{m}/unload  {"parameters"?: {...}}

Without a configured token every route answers 403; a missing or wrong token gets 401, with the
same body whichever it was. Changes go through ``mserve.lifecycle`` (its gates, its audit entry,
one ``model.json`` transaction) on a worker thread, so inference never waits on them, and answer
once this server serves the result.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from mserve.canary import DEFAULT_TOLERANCE
from mserve.errors import (
    AdminDisabled,
    InputError,
    MethodNotAllowed,
    NotFoundError,
    NotReady,
    Unauthorized,
)
from mserve.lifecycle import LabelChange, Lifecycle, check_actor
from mserve.repository import STABLE, ModelState

from .manager import ModelManager

log = logging.getLogger("mserve.server")
HISTORY_SHOWN = 20
FIELDS = {  # what each change's body may hold
    "promote": {"version", "label", "actor", "allow_breaking"},
    "rollback": {"label", "actor"},
    "retire": {"version", "actor"},
    "canary": {
        "version",
        "label",
        "weight",
        "header",
        "shadow",
        "tolerance",
        "actor",
        "allow_breaking",
    },
    "canary/promote": {"actor"},
    "canary/abort": {"actor", "reason"},
}
BEARER = b"bearer "


class Admin:
    def __init__(self, token: str | None, manager: ModelManager, via: str) -> None:
        self._token = token.encode() if token else None
        self.manager = manager
        self.lifecycle = Lifecycle(manager.source, via=via, prepare=manager.prepare)
        # One change at a time in this process; the repository's file lock orders processes.
        self._changing = threading.Lock()
        # Called with the model after each change: the other workers of this server apply it.
        self.after_change: Callable[[str], None] = lambda model: None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def authorize(self, authorization: bytes | None) -> None:
        if self._token is None:
            raise AdminDisabled(
                "the admin API is off: start the server with MSERVE_ADMIN_TOKEN set or "
                "--admin-token-file"
            )
        given = authorization or b""
        scheme, token = given[: len(BEARER)], given[len(BEARER) :].strip()
        # compare_digest takes as long whatever the token's content, so timing tells nothing.
        if not (scheme.lower() == BEARER and hmac.compare_digest(token, self._token)):
            raise Unauthorized("a valid admin token is required (Authorization: Bearer ...)")

    # -- REST -------------------------------------------------------------------------------

    async def admin(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        """``/admin/...`` (``parts`` after ``admin``), already authorized."""
        if parts[:1] != ["models"] or len(parts) > 4:
            raise NotFoundError(f"no route for /admin/{'/'.join(parts)}")
        if len(parts) == 1:
            MethodNotAllowed.unless(method, "GET")
            return 200, {"models": await asyncio.to_thread(self.status)}
        model = parts[1]
        if len(parts) == 2:
            MethodNotAllowed.unless(method, "GET")
            return 200, (await asyncio.to_thread(self.status, model))[0]
        operation = "/".join(parts[2:])
        if operation not in FIELDS:
            raise NotFoundError(f"no route for /admin/{'/'.join(parts)}")
        MethodNotAllowed.unless(method, "POST")
        fields = _fields(body, FIELDS[operation])
        actor = check_actor(_typed(fields, "actor", str, "unknown"))
        label = _typed(fields, "label", str, STABLE)
        version = _typed(fields, "version", int, None, required="version" in FIELDS[operation])
        breaking = _typed(fields, "allow_breaking", bool, False)
        lifecycle = self.lifecycle
        run = {
            "promote": lambda: lifecycle.promote(
                model, version, label=label, actor=actor, allow_breaking=breaking
            ),
            "rollback": lambda: lifecycle.rollback(model, label=label, actor=actor),
            "retire": lambda: lifecycle.retire(model, version, actor=actor),
            "canary": lambda: lifecycle.canary(
                model,
                version,
                label=label,
                weight=_number(fields, "weight", 10.0),
                header=_typed(fields, "header", str, None),
                shadow=_typed(fields, "shadow", bool, False),
                tolerance=_number(fields, "tolerance", DEFAULT_TOLERANCE),
                actor=actor,
                allow_breaking=breaking,
            ),
            "canary/promote": lambda: lifecycle.canary_promote(model, actor=actor),
            "canary/abort": lambda: lifecycle.canary_abort(
                model, actor=actor, reason=_typed(fields, "reason", str, "")
            ),
        }[operation]
        change = await self._change(model, run)
        status = await asyncio.to_thread(self.status, model)
        return 200, {"change": change.to_dict(), "model": status[0]}

    async def repository(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        """The V2 repository extension (``parts`` after ``repository``), already authorized."""
        MethodNotAllowed.unless(method, "POST")
        if parts == ["index"]:
            ready_only = _typed(_fields(body, {"ready"}), "ready", bool, False)
            return 200, self.index(ready_only)
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            parameters = _typed(_fields(body, {"parameters"}), "parameters", dict, {})
            await self.set_serving(parts[1], parts[2] == "load", parameters)
            return 200, {}
        raise NotFoundError(f"no route for /v2/repository/{'/'.join(parts)}")

    # -- operations (REST and gRPC) ---------------------------------------------------------

    async def _change(self, model: str, operation: Any) -> LabelChange:
        def run() -> LabelChange:
            with self._changing:
                change: LabelChange = operation()
                if change.changed:
                    log.info("admin: %s, by %s", change.describe(), change.actor)
                self.manager.refresh(model)
                self.after_change(model)
                self._require_served(change)
                return change

        return await asyncio.to_thread(run)

    def _require_served(self, change: LabelChange) -> None:
        if change.operation == "canary":
            route = self.manager.snapshot.routes.get(change.model)
            if route is None or route.candidate.version != change.to_version:
                raise NotReady(
                    f"the canary of {change.model} is set, but this server does not apply it "
                    "(see its status)"
                )
            return
        if change.operation not in ("promote", "rollback") or change.label is None:
            return
        labels = self.manager.snapshot.labels.get(change.model, {})
        if labels.get(change.label) != change.to_version:
            statuses = self.manager.snapshot.status.get(change.model, {})
            reason = statuses.get(change.to_version or 0)
            why = f": {reason.error}" if reason is not None and reason.error else ""
            raise NotReady(
                f"'{change.label}' names {change.model}:{change.to_version}, which this server "
                f"does not serve{why}"
            )

    async def set_serving(self, model: str, serving: bool, parameters: dict[str, Any]) -> None:
        refused = [k for k in parameters if k == "config" or k.startswith("file:")]
        if refused:
            raise InputError(
                f"parameter '{refused[0]}' refused: mserve serves only what its repository holds"
            )

        def run() -> None:
            with self._changing:
                self.lifecycle.set_serving(model, serving, actor="V2 repository API")
                self.manager.refresh(model)
                self.after_change(model)
            if serving and not self.manager.snapshot.served.get(model):
                errors = [s.error for s in self.manager.snapshot.status.get(model, {}).values()]
                raise NotReady(
                    f"model '{model}' has no version that loads"
                    + (f": {errors[-1]}" if any(errors) else "")
                )

        await asyncio.to_thread(run)

    def index(self, ready_only: bool) -> list[dict[str, str]]:
        entries = []
        snapshot = self.manager.snapshot
        for name, statuses in sorted(snapshot.status.items()):
            for number, status in statuses.items():
                ready = status.state == "AVAILABLE"
                if ready or not ready_only:
                    entries.append(
                        {
                            "name": name,
                            "version": str(number),
                            "state": "READY" if ready else "UNAVAILABLE",
                            "reason": status.error,
                        }
                    )
        return entries

    def status(self, model: str | None = None) -> list[dict[str, Any]]:
        """What the repository holds and what this server does with it, model by model; a
        model whose ``model.json`` cannot be read is listed with its ``error``."""
        repository, unreachable = self.manager.source, ""
        mirror = self.manager.mirror
        if mirror is not None and mirror.error:  # the store is away: what the server has
            repository = self.manager.repository
            unreachable = f"the model repository cannot be reached: {mirror.error}"
        if model is None:
            entries = repository.entries()
        else:
            try:
                entries = [repository.entry(model)]
            except NotFoundError:  # its message names the repository's location
                raise NotFoundError(f"model '{model}' not found") from None
        snapshot = self.manager.snapshot
        report = []
        for entry in entries:
            state = entry.state or ModelState()
            statuses = snapshot.status.get(entry.name, {})
            served_labels = snapshot.labels.get(entry.name, {})
            route = snapshot.routes.get(entry.name)
            rows = []
            for number in entry.versions:
                status = statuses.get(number)
                served = snapshot.served.get(entry.name, {}).get(number)
                rows.append(
                    {
                        "version": number,
                        "state": status.state if status is not None else "END",
                        "error": status.error if status is not None else "",
                        "retired": number in state.retired,
                        "labels": sorted(k for k, v in served_labels.items() if v == number),
                        # where it runs: onnxruntime's providers, and its threads
                        "providers": served.providers if served is not None else [],
                        "threads": served.threads if served is not None else 0,
                    }
                )
            report.append(
                {
                    "name": entry.name,
                    "ready": bool(snapshot.served.get(entry.name)),
                    "error": self.manager.redact(entry.problem) or unreachable,
                    "unloaded": state.unloaded,
                    "labels": served_labels,
                    "labels_in_repository": state.labels,
                    # equal unless this replica lags the repository (or cannot read it)
                    "state_applied": snapshot.applied.get(entry.name, ""),
                    "state_in_repository": state.fingerprint() if entry.state else "",
                    "canary": None if state.canary is None else state.canary.to_dict(),
                    "canary_applied": route.id if route is not None else "",
                    "versions": rows,
                    "history": state.history[-HISTORY_SHOWN:],
                }
            )
        return report


def _fields(body: bytes, known: set[str]) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InputError("the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise InputError("the body must be a JSON object")
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"unknown field '{unknown[0]}' (known: {', '.join(sorted(known))})")
    return fields


def _typed(
    fields: dict[str, Any], name: str, kind: type, default: Any, *, required: bool = False
) -> Any:
    if name not in fields:
        if required:
            raise InputError(f"field '{name}' is required")
        return default
    value = fields[name]
    # bool is an int in Python, never in a request
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"field '{name}' must be a {kind.__name__}")
    return value


def _number(fields: dict[str, Any], name: str, default: float) -> float:
    value = fields.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InputError(f"field '{name}' must be a number")
    return float(value)
