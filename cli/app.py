"""The root ``mserve`` command: global options, and the one place errors become exit codes."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mserve.errors import MserveError, foreign_message

from . import bench, canary, export, inspect, lifecycle, predict, serve, status, validate
from .output import Mode, error_line

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class MserveGroup(TyperGroup):
    """Turns every failure into one line on stderr and an exit code (traceback with --debug)."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        Mode.json = Mode.debug = False
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            if code == INTERRUPTED:  # Typer's silent answer to Ctrl-C in a command
                error_line("interrupted")  # an export stopped so publishes nothing (atomic)
        except typer.TyperException as exc:  # usage: unknown option, missing argument, ...
            context = getattr(exc, "ctx", None)
            command = context.command_path if context is not None else "mserve"
            error_line(f"{exc.format_message()} (see '{command} --help')")
            code = exc.exit_code
        except typer.Abort:
            error_line("aborted")
            code = INTERRUPTED
        except MserveError as exc:
            if Mode.debug:
                traceback.print_exc()
            error_line(exc.message)
            code = exc.exit_code
        except Exception as exc:  # a bug in mserve: say so in one line, the details with --debug
            if Mode.debug:
                traceback.print_exc()
            error_line(
                f"internal error: {type(exc).__name__}: {foreign_message(exc)} (rerun with --debug)"
            )
            code = 3
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=MserveGroup,
    name="mserve",
    help=(
        "Export models to ONNX with verified parity, version them in a repository, serve them.\n\n"
        "Exit codes: 0 success, 1 a check failed, 2 usage error, 3 environment problem."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~60 ms of imports
    add_completion=False,
    pretty_exceptions_enable=False,  # locals can hold admin tokens
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mserve {version('mserve')}")
        raise typer.Exit()


@app.callback()
def root(
    *,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="MSERVE_DEBUG", help="Show tracebacks for errors."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    Mode.debug = debug


app.command("export")(export.export_command)
app.command("validate")(validate.validate_command)
app.command("list")(inspect.list_command)
app.command("show")(inspect.show_command)
app.command("predict")(predict.predict_command)
app.command("bench")(bench.bench_command)
app.command("serve")(serve.serve_command)
app.command("status")(status.status_command)
app.command("promote")(lifecycle.promote_command)
app.command("rollback")(lifecycle.rollback_command)
app.command("retire")(lifecycle.retire_command)
app.add_typer(canary.app)
