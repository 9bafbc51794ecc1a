"""``mserve status``: what a running server serves."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import JsonOption, ServerOption
from .output import console, emit_json, escape, table


def status_command(
    model: Annotated[
        str | None, typer.Argument(metavar="[MODEL]", help="Only this model.", show_default=False)
    ] = None,
    *,
    server: ServerOption,
    json: JsonOption = False,
) -> None:
    """Show a running server's models, versions, their states and labels."""
    from mserve.client import ServerClient

    client = ServerClient(server)
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
            versions.add_row(
                escape(entry["name"]),
                str(v["version"]),
                v["state"],
                labels or "-",
                escape(v["error"]) or "-",
            )
    console().print(versions)
