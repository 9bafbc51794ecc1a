"""The README's CLI reference, generated from the same declarations that ``--help`` renders.

    python tests/cli_reference.py --write README.md   # regenerate (make docs)
    python tests/cli_reference.py                      # print it

tests/test_readme.py fails when the README's copy is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
    else:
        name = ", ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])
        if not getattr(param, "is_flag", False):
            name += f" {param.metavar or param.name.upper()}"
    notes = []
    if param.required:
        notes.append("required")
    if param.multiple:
        notes.append("repeatable")
    if param.default not in (None, False, ()) and not param.required:
        notes.append(f"default `{param.default}`")
    if getattr(param, "envvar", None):
        notes.append(f"env `{param.envvar}`")
    help_text = getattr(param, "help", "") or ""
    suffix = f" ({'; '.join(notes)})" if notes else ""
    return f"| {_cell(name)} | {_cell(help_text + suffix)} |"


def _section(command: Any, context: Any, title: str) -> list[str]:
    lines = [f"### `{title}`", ""]
    lines += [(command.help or "").strip(), ""]
    usage = " ".join(command.collect_usage_pieces(context)).replace("{", "").replace("}", "")
    lines += ["```", f"{title} {usage}", "```", ""]
    params = [p for p in command.params if p.name != "help"]
    if params:
        lines += ["| argument / option | description |", "|---|---|"]
        lines += [_param_row(p) for p in params]
        lines.append("")
    return lines


def render() -> str:
    import typer
    import typer.main
    from mserve.cli.app import app

    root = typer.main.get_command(app)
    root_context = typer.Context(root, info_name="mserve")
    lines = _section(root, root_context, "mserve")
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        context = typer.Context(command, info_name=name, parent=root_context)
        lines += _section(command, context, f"mserve {name}")
        for sub, subcommand in getattr(command, "commands", {}).items():  # a group's commands
            subcontext = typer.Context(subcommand, info_name=sub, parent=context)
            lines += _section(subcommand, subcontext, f"mserve {name} {sub}")
    return "\n".join(lines).rstrip() + "\n"


def replace_section(readme: str, reference: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference}{END}{tail}"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        path.write_text(replace_section(path.read_text(), render()))
    else:
        sys.stdout.write(render())
