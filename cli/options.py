"""Options shared by several commands, declared once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mserve.errors import UsageError

from .output import remember_json

TOKEN_VARIABLE = "MSERVE_ADMIN_TOKEN"  # noqa: S105 (a variable name, not a secret)
MIN_TOKEN_LENGTH = 16


URL_SCHEMES = ("file", "s3", "gs", "gcs", "memory")


def repository_option(value: str | None) -> str | None:
    """--repo is checked before any work: a file there, or a URL of an unknown kind, would
    fail late, with a worse message.

    A missing directory is left to the command (``export`` creates it; the others say so).
    """
    if value is None:
        return None
    scheme, separator, _ = value.partition("://")
    if separator:
        if scheme not in URL_SCHEMES:
            raise UsageError(
                f"--repo {value}: a repository URL starts with s3://, gs:// or file://"
            )
        return value
    if Path(value).exists() and not Path(value).is_dir():
        raise UsageError(f"--repo {value} is not a directory")
    return value


RepoOption = Annotated[
    str,
    typer.Option(
        "--repo",
        metavar="DIR|URL",
        envvar="MSERVE_REPO",
        help="Model repository: a folder, or s3://bucket/prefix, gs://bucket/prefix.",
        show_default=True,
        callback=repository_option,
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
DEFAULT_REPO = "models"
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
LocalOrServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        metavar="URL",
        envvar="MSERVE_SERVER",
        help="A running server to use instead of onnxruntime in this process.",
        show_default=False,
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        metavar="FILE",
        envvar="MSERVE_TOKEN_FILE",
        help=f"File holding the server's admin token [default: ${TOKEN_VARIABLE}].",
        show_default=False,
    ),
]


def admin_token(token_file: Path | None, option: str) -> str | None:
    """The admin token from ``token_file``, else from $MSERVE_ADMIN_TOKEN; None if neither.

    Never an option's value: a command line is visible to every user of the machine.
    """
    if token_file is not None:
        try:
            token, source = token_file.read_text("utf-8").strip(), f"{option} {token_file}"
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{option} {token_file}: cannot read it ({exc})") from None
    else:
        token, source = os.environ.get(TOKEN_VARIABLE, "").strip(), TOKEN_VARIABLE
        if not token:
            return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
        raise UsageError(
            f"the admin token in {source} must be at least {MIN_TOKEN_LENGTH} printable "
            "characters without spaces (python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token
