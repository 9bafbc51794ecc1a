"""Where output goes: results to stdout (a rich table, or JSON with --json); errors to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Rich consoles are cheap; the wide stdout console keeps tables intact when piped to a CI log.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class Mode:
    """Set by the --json and --debug options of whichever command is running."""

    json = False
    debug = False


def remember_json(value: bool) -> bool:
    Mode.json = Mode.json or value
    return value


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def error_line(message: str) -> None:
    """One line on stderr (never wrapped), and with --json also ``{"error": ...}`` on stdout."""
    message = " ".join(message.split())
    sys.stderr.write(f"mserve: error: {message}\n")
    if Mode.json:
        emit_json({"error": message})


def note(message: str) -> None:
    if not Mode.json:
        err_console.print(f"[yellow]note:[/] {message}", markup=True, soft_wrap=True)
