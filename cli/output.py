"""Where output goes: results to stdout (a rich table, or JSON with --json); errors to stderr."""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


@cache
def console() -> Console:
    """stdout for people; rich is imported on first use, so `--help` stays fast."""
    import os

    from rich.console import Console

    # A CI log is no terminal: rich would wrap tables at 80 columns; logs have room.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, width=160 if wide else None)


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


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
        err_console().print(f"[yellow]note:[/] {message}", markup=True, soft_wrap=True)


def escape(text: str) -> str:
    """Text shown inside rich markup (names, paths, shapes like [?, 4]) must not be parsed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def table(title: str | None, *columns: str) -> Table:
    from rich.table import Table

    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column, no_wrap=column in {"output", "model", "check", "name"})
    return result
