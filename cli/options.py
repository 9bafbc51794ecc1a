"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import remember_json

RepoOption = Annotated[
    Path,
    typer.Option(
        "--repo",
        metavar="DIR",
        envvar="MSERVE_REPO",
        help="Model repository directory.",
        show_default=True,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print the result as JSON on stdout.", callback=remember_json),
]
RefArgument = Annotated[
    str,
    typer.Argument(
        metavar="REF",
        help="MODEL (its 'stable' label, else its latest version), MODEL:VERSION or MODEL@LABEL.",
        show_default=False,
    ),
]
DEFAULT_REPO = Path("models")
ServerOption = Annotated[
    str,
    typer.Option(
        "--server",
        metavar="URL",
        envvar="MSERVE_SERVER",
        help="A running mserve server, e.g. http://127.0.0.1:8000.",
        show_default=False,
    ),
]
