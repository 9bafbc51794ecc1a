"""``mserve status``: what a running server serves."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .options import JsonOption, ServerOption, TokenFileOption, admin_token
from .output import console, emit_json, escape, table


def status_command(
    model: Annotated[
        str | None, typer.Argument(metavar="[MODEL]", help="Only this model.", show_default=False)
    ] = None,
    *,
    server: ServerOption,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """Show a running server's models, versions, their states and labels (with the admin token,
    also retired versions and each model's last changes)."""
    from mserve.client import ServerClient

    client = ServerClient(server, token=admin_token(token_file, "--token-file"))
    try:
        report = client.status(model)
    finally:
        client.close()
    if json:
        emit_json(report)
        return
    health = "ready" if report["ready"] else "live, not ready" if report["live"] else "down"
    versions = table(
        f"{escape(report['server'])} ({health})", "model", "version", "state", "labels", "error"
    )
    for entry in report["models"]:
        for v in entry["versions"]:
            labels = ", ".join(k for k, n in sorted(entry["labels"].items()) if n == v["version"])
            state = "RETIRED" if v.get("retired") else v["state"]
            versions.add_row(
                escape(entry["name"]),
                str(v["version"]),
                state,
                labels or "-",
                escape(v["error"]) or "-",
            )
    console().print(versions)
    for entry in report["models"]:
        if entry.get("error"):  # its model.json cannot be read (admin view)
            console().print(f"{escape(entry['name'])}: {escape(entry['error'])}")
        applied, current = entry.get("state_applied"), entry.get("state_in_repository")
        if applied and current and applied != current:  # admin view: this replica lags
            console().print(
                f"{escape(entry['name'])}: serves repository state {applied}; the repository "
                f"is at {current} (the server has not polled it since)"
            )
        canary = entry.get("canary")
        if canary:  # admin view
            from mserve.canary import Canary

            shown = Canary.from_dict(canary)
            applied_here = entry.get("canary_applied") == shown.id
            console().print(
                f"{escape(entry['name'])}: canary {escape(shown.id)}: {escape(shown.describe())}"
                + ("" if applied_here else " (not applied by this server yet)")
            )
    for entry in report["models"]:
        for change in entry.get("history", [])[-3:]:
            console().print(escape(_describe(entry["name"], change)))


def _describe(model: str, entry: dict[str, Any]) -> str:
    from mserve.lifecycle import LabelChange

    fields = {k: v for k, v in entry.items() if k != "via"}
    change = LabelChange.from_dict({"model": model, "changed": True, **fields})
    return f"{change.time} {change.describe()} by {change.actor}"
