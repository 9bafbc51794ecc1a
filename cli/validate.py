"""``mserve validate``: is a version sound, and can it replace another?"""

from __future__ import annotations

from typing import Annotated

import typer

from mserve.reference import Reference
from mserve.stores import open_repository

from .options import DEFAULT_REPO, JsonOption, RefArgument, RepoOption
from .output import console, emit_json, escape, table


def validate_command(
    ref: RefArgument,
    *,
    against: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="Also check the signature is compatible with this version (breaking: exit 1).",
        ),
    ] = None,
    repo: RepoOption = DEFAULT_REPO,
    json: JsonOption = False,
) -> None:
    """Check a version: ONNX validity, files, signature, samples; optionally compatibility."""
    from mserve.validation import validate

    repository = open_repository(repo)
    model, version = repository.resolve(Reference.parse(ref))
    baseline = repository.resolve(Reference.parse(against)) if against else None
    report = validate(repository, model, version, baseline)
    if json:
        emit_json(report.to_dict())
    else:
        checks = table(f"{model}:{version}", "check", "result", "detail")
        for check in report.checks:
            checks.add_row(
                check.name, "[green]ok[/]" if check.passed else "[red]FAIL[/]", escape(check.detail)
            )
        console().print(checks)
        if report.compatibility is not None:
            verdict = "compatible" if report.compatibility.compatible else "[red]BREAKING[/]"
            console().print(f"Against {report.against}: {verdict}")
            for change in report.compatibility.changes:
                mark = "[red]breaking[/]" if change.breaking else "compatible"
                console().print(f"  {mark}  {escape(change.where)}: {escape(change.message)}")
    if not report.passed:
        raise typer.Exit(1)
