"""``mserve promote``, ``rollback`` and ``retire``: lifecycle changes made through running servers'
admin API (each named server in turn), or straight in a repository that servers poll.

Exit codes, as for every command (mserve.errors): 0 done everywhere; 1 refused somewhere (a
gate, a conflict); 2 a bad argument (an unknown model, version or label); 3 a server
unreachable, a token refused, or --wait timed out. The highest code wins.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mserve.errors import MserveError, Unauthorized, UsageError

from .options import JsonOption, TokenFileOption, admin_token, repository_option
from .output import console, emit_json, error_line, escape

if TYPE_CHECKING:
    from mserve.client import ServerClient

ModelArgument = Annotated[str, typer.Argument(metavar="MODEL", help="Model name.")]
VersionArgument = Annotated[int, typer.Argument(metavar="VERSION", help="Version number.")]
ServersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        metavar="URL",
        envvar="MSERVE_SERVER",
        help="A running server (admin API); repeat to change several in turn "
        "(MSERVE_SERVER: URLs separated by spaces). With --repo: a replica to --wait for "
        "(a name that resolves to several addresses stands for each).",
        show_default=False,
    ),
]
TargetRepoOption = Annotated[
    str | None,
    typer.Option(
        "--repo",
        metavar="DIR|URL",
        help="Change the repository's model.json instead: one write, which every replica "
        "polling it follows.",
        show_default=False,
        callback=repository_option,
    ),
]
LabelOption = Annotated[str, typer.Option("--label", metavar="LABEL", help="The label to move.")]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        metavar="NAME",
        envvar="MSERVE_ACTOR",
        help="Who is making the change, for the audit trail [default: the CI user and job, "
        "else user@host].",
        show_default=False,
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Return once every server (replica) answers with the version under the label.",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", help="Longest wait for each server, --wait included."
    ),
]


@dataclass
class Outcome:
    target: str
    change: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int = 0
    served_after_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.exit_code == 0,
            "change": self.change,
            "error": self.error,
            "served_after_s": self.served_after_s,
        }


def promote_command(
    model: ModelArgument,
    version: VersionArgument,
    *,
    label: LabelOption = "stable",
    server: ServersOption = None,
    repo: TargetRepoOption = None,
    allow_breaking: Annotated[
        bool,
        typer.Option(
            "--allow-breaking",
            help="Promote even if clients of the label's current version would break.",
        ),
    ] = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """Move a label (default 'stable') to a version: it must validate, keep the label's clients
    working, and be loaded and ready before the label moves."""
    fields = {"version": version, "label": label, "allow_breaking": allow_breaking}
    run_change(
        "promote",
        model,
        fields,
        servers=server,
        repo=repo,
        wait=wait,
        timeout=timeout,
        actor=actor,
        token_file=token_file,
        json=json,
    )


def rollback_command(
    model: ModelArgument,
    *,
    label: LabelOption = "stable",
    server: ServersOption = None,
    repo: TargetRepoOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """Move a label back to the version it named before its last promote."""
    run_change(
        "rollback",
        model,
        {"label": label},
        servers=server,
        repo=repo,
        wait=wait,
        timeout=timeout,
        actor=actor,
        token_file=token_file,
        json=json,
    )


def retire_command(
    model: ModelArgument,
    version: VersionArgument,
    *,
    server: ServersOption = None,
    repo: TargetRepoOption = None,
    timeout: TimeoutOption = 60.0,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """Stop serving a version for good (refused while a label names it)."""
    fields = {"version": version}
    run_change(
        "retire",
        model,
        fields,
        servers=server,
        repo=repo,
        wait=False,
        timeout=timeout,
        actor=actor,
        token_file=token_file,
        json=json,
    )


def run_change(
    operation: str,
    model: str,
    fields: dict[str, Any],
    *,
    servers: list[str] | None,
    repo: str | None,
    wait: bool,
    timeout: float,
    actor: str | None,
    token_file: Path | None,
    json: bool,
) -> None:
    from mserve.lifecycle import check_actor, default_actor

    if not servers and not repo:
        raise UsageError("say where: --repo DIR|URL, or --server URL (or MSERVE_SERVER)")
    if repo is not None and servers and not wait:
        raise UsageError("with --repo, --server names the replicas to --wait for: add --wait")
    if repo is not None and wait and not servers:
        raise UsageError("--wait waits for the replicas: name them with --server (repeated)")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    fields["actor"] = check_actor(actor) if actor else default_actor()
    if repo is not None:  # one write, which every replica polling the repository follows
        outcomes = [change_in_repository(operation, model, fields, repo)]
        change = outcomes[0].change
        if wait and change is not None:
            replicas = [Outcome(url, change) for url in expand_replicas(servers or [])]
            _wait(replicas, model, timeout)
            outcomes += replicas
    else:
        token = admin_token(token_file, "--token-file")
        outcomes = [
            change_on_server(operation, model, fields, url, token=token, timeout=timeout)
            for url in servers or []
        ]
        if wait:
            _wait(outcomes, model, timeout)
    _report(operation, model, outcomes, json)


def change_in_repository(operation: str, model: str, fields: dict[str, Any], repo: str) -> Outcome:
    from mserve.lifecycle import Lifecycle
    from mserve.repository import LocalRepository
    from mserve.stores import open_repository

    repository = open_repository(repo)
    if isinstance(repository, LocalRepository) and not repository.root.is_dir():
        raise UsageError(f"model repository {repo} does not exist")
    lifecycle = Lifecycle(repository, via=f"mserve {operation} --repo on {socket.gethostname()}")
    try:
        change = getattr(lifecycle, operation.replace("/", "_"))(model, **fields)
    except MserveError as exc:
        return _failed(str(repo), exc)
    return Outcome(str(repo), change.to_dict())


def change_on_server(
    operation: str,
    model: str,
    fields: dict[str, Any],
    url: str,
    *,
    token: str | None,
    timeout: float,
) -> Outcome:
    from mserve.client import ServerClient

    if token is None:
        return _failed(
            url, Unauthorized("no admin token: give --token-file FILE or set MSERVE_ADMIN_TOKEN")
        )
    client = ServerClient(url, timeout=timeout, token=token)
    try:
        return Outcome(url, client.change(model, operation, **fields)["change"])
    except MserveError as exc:
        return _failed(url, exc)
    finally:
        client.close()


def _failed(target: str, error: MserveError) -> Outcome:
    # The error tree's own code, so an unknown model is 2 here as it is for every command.
    return Outcome(target, error=error.message, exit_code=error.exit_code)


def expand_replicas(servers: list[str]) -> list[str]:
    """The servers to wait for: each URL, and a name that resolves to several addresses (a
    Kubernetes headless Service) as one URL per address."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    found: list[str] = []
    for url in servers:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        addresses: list[str] = []
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                infos = []  # waited for as given: it is reported as not serving
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if len(addresses) < 2:
            found.append(url)
            continue
        for address in addresses:
            shown = f"[{address}]" if ":" in address else address
            found.append(parts._replace(netloc=f"{shown}:{port}").geturl())
    return found


def _wait(outcomes: list[Outcome], model: str, timeout: float) -> None:
    """Poll each changed server until it serves what the change says: the label's new version,
    or the canary started or ended."""
    from mserve.client import ServerClient

    started = time.monotonic()
    for outcome in outcomes:
        change = outcome.change
        if change is None:
            continue
        client = ServerClient(outcome.target, timeout=5)
        try:
            while not _applies(client, model, change):
                if time.monotonic() - started > timeout:
                    outcome.error = f"{_what(model, change)} within {timeout:g} s"
                    outcome.exit_code = 3
                    break
                time.sleep(0.05)
            else:
                outcome.served_after_s = round(time.monotonic() - started, 3)
        finally:
            client.close()


def _applies(client: ServerClient, model: str, change: dict[str, Any]) -> bool:
    operation, version = change["operation"], change["to"]
    if operation not in ("canary", "abort"):
        return client.serves(model, change["label"], version)
    try:
        canary = client.canary(model)
    except MserveError:
        return False
    if operation == "abort":
        return canary is None
    return canary is not None and canary["candidate"] == str(version)


def _what(model: str, change: dict[str, Any]) -> str:
    """What a server that has not followed CHANGE fails to do, for the error line."""
    if change["operation"] == "canary":
        return f"the canary of {model} to version {change['to']} was not applied"
    if change["operation"] == "abort":
        return f"the canary of {model} was still applied"
    return f"{model}@{change['label']} was not served by version {change['to']}"


def _report(operation: str, model: str, outcomes: list[Outcome], json: bool) -> None:
    code = max(o.exit_code for o in outcomes)
    if json:
        emit_json(
            {
                "operation": operation,
                "model": model,
                "ok": code == 0,
                "results": [o.to_dict() for o in outcomes],
            }
        )
    else:
        from mserve.lifecycle import LabelChange

        for o in outcomes:
            if o.change is not None:
                change = LabelChange.from_dict(o.change)
                served = (
                    f" (served after {o.served_after_s:.2f} s)"
                    if o.served_after_s is not None
                    else ""
                )
                console().print(f"{escape(o.target)}: {escape(change.describe())}{served}")
            if o.error is not None:
                error_line(f"{o.target}: {o.error}")
    if code:
        raise typer.Exit(code)
