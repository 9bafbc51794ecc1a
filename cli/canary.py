"""``mserve canary start|show|watch|promote|abort``: a share of a label's requests to a candidate
version, judged against the baseline on every replica's figures.

start, promote and abort are lifecycle changes like promote (one repository write with
``--repo``, or through servers' admin API) and take the same options; show and watch read
the figures of every replica named with ``--server``; watch aborts a candidate that is worse
than the baseline by more than its gates allow, and with ``--promote`` promotes one that held.
Exit codes: 0 done (or healthy); 1 refused, or a candidate judged worse (aborted); 2 a bad
argument; 3 a replica unreachable, or too few requests to judge within ``--for``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from mserve.errors import Conflict, EnvironmentProblem, UsageError

from .lifecycle import (
    ActorOption,
    LabelOption,
    ModelArgument,
    ServersOption,
    TargetRepoOption,
    TimeoutOption,
    VersionArgument,
    WaitOption,
    run_change,
)
from .options import JsonOption, TokenFileOption, admin_token
from .output import console, emit_json, error_line, escape, table

app = typer.Typer(
    name="canary",
    help="Send a share of a label's requests (or a shadow copy of them) to a candidate "
    "version, watch it against the baseline, then promote or abort it.",
    no_args_is_help=True,
)

ReplicasOption = Annotated[
    list[str],
    typer.Option(
        "--server",
        metavar="URL",
        envvar="MSERVE_SERVER",
        help="A replica whose metrics count (repeat for each; a name that resolves to several "
        "addresses stands for each). MSERVE_SERVER: URLs separated by spaces.",
        show_default=False,
    ),
]
MaxErrorOption = Annotated[
    float,
    typer.Option(
        "--max-error-increase",
        metavar="FRACTION",
        help="Fail when the candidate's error rate exceeds the baseline's by more than this "
        "(0.01: one point).",
    ),
]
LatencyOption = Annotated[
    float,
    typer.Option(
        "--max-latency-ratio",
        metavar="RATIO",
        help="Fail when the candidate's p99 exceeds the baseline's times this.",
    ),
]
AgreementOption = Annotated[
    float,
    typer.Option(
        "--min-agreement",
        metavar="FRACTION",
        help="Fail when fewer shadow copies than this agree with the baseline.",
    ),
]
MinRequestsOption = Annotated[
    int,
    typer.Option(
        "--min-requests",
        metavar="N",
        help="Judge once the candidate has answered (or shadowed) this many requests.",
    ),
]


@app.command("start")
def start_command(
    model: ModelArgument,
    version: VersionArgument,
    *,
    label: LabelOption = "stable",
    weight: Annotated[
        float,
        typer.Option(
            "--weight",
            metavar="PERCENT",
            help="The share of the label's requests the candidate answers (0 with --shadow: "
            "none, it only gets copies).",
        ),
    ] = 10.0,
    header: Annotated[
        str | None,
        typer.Option(
            "--header",
            metavar="NAME",
            help="Sticky on this request header (gRPC: metadata): the same value always "
            "reaches the same version, on every replica.",
            show_default=False,
        ),
    ] = None,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="Also copy each request the baseline answers to the candidate, off the "
            "request path, and count how its answers agree.",
        ),
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            metavar="X",
            help="Shadow answers agree when their labels are equal and their values are at "
            "most this far apart.",
        ),
    ] = 1e-4,
    allow_breaking: Annotated[
        bool,
        typer.Option("--allow-breaking", help="Start it even if the label's clients would break."),
    ] = False,
    server: ServersOption = None,
    repo: TargetRepoOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """Start a canary: the version must pass promote's gates (valid, loaded, compatible with
    the label's version); the label itself stays where it is until the canary is promoted."""
    fields = {
        "version": version,
        "label": label,
        "weight": weight,
        "header": header,
        "shadow": shadow,
        "tolerance": tolerance,
        "allow_breaking": allow_breaking,
    }
    run_change(
        "canary",
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


@app.command("promote")
def promote_command(
    model: ModelArgument,
    *,
    server: ServersOption = None,
    repo: TargetRepoOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """End the canary by moving its label to the candidate (a promote: rollback undoes it)."""
    run_change(
        "canary/promote",
        model,
        {},
        servers=server,
        repo=repo,
        wait=wait,
        timeout=timeout,
        actor=actor,
        token_file=token_file,
        json=json,
    )


@app.command("abort")
def abort_command(
    model: ModelArgument,
    *,
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why, for the audit trail.")
    ] = "",
    server: ServersOption = None,
    repo: TargetRepoOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = 60.0,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """End the canary: all of the label's requests go to the baseline again."""
    run_change(
        "canary/abort",
        model,
        {"reason": reason},
        servers=server,
        repo=repo,
        wait=wait,
        timeout=timeout,
        actor=actor,
        token_file=token_file,
        json=json,
    )


@app.command("show")
def show_command(
    model: ModelArgument,
    *,
    server: ReplicasOption,
    max_error_increase: MaxErrorOption = 0.01,
    max_latency_ratio: LatencyOption = 1.5,
    min_agreement: AgreementOption = 0.99,
    min_requests: MinRequestsOption = 100,
    json: JsonOption = False,
) -> None:
    """Show a canary's split, and the baseline's and candidate's figures summed over every
    replica: requests, error rate, p50/p99, shadow agreement; and the verdict of the gates."""
    gates = _gates(max_error_increase, max_latency_ratio, min_agreement, min_requests)
    figures, verdict = _judge(model, server, gates)
    if json:
        emit_json({**figures.to_dict(), "verdict": verdict.to_dict()})
    else:
        _print(figures, verdict)
    if figures.unreachable:
        raise typer.Exit(3)
    if verdict.outcome == "fail":
        raise typer.Exit(1)


@app.command("watch")
def watch_command(
    model: ModelArgument,
    *,
    server: ReplicasOption,
    repo: TargetRepoOption = None,
    duration: Annotated[
        float,
        typer.Option("--for", metavar="SECONDS", help="How long to watch before deciding."),
    ] = 300.0,
    every: Annotated[
        float,
        typer.Option("--every", metavar="SECONDS", help="How often the replicas are read."),
    ] = 10.0,
    promote: Annotated[
        bool,
        typer.Option("--promote", help="Promote the candidate when it held for the whole time."),
    ] = False,
    max_error_increase: MaxErrorOption = 0.01,
    max_latency_ratio: LatencyOption = 1.5,
    min_agreement: AgreementOption = 0.99,
    min_requests: MinRequestsOption = 100,
    actor: ActorOption = None,
    token_file: TokenFileOption = None,
    json: JsonOption = False,
) -> None:
    """Watch a canary and abort it as soon as the candidate is judged worse than the baseline
    (one repository write with --repo, else through the first --server's admin API); with
    --promote, promote it once it held for --for seconds."""
    from mserve.lifecycle import LabelChange, check_actor, default_actor

    from .lifecycle import change_in_repository, change_on_server

    if duration <= 0 or every <= 0:
        raise UsageError("--for and --every must be positive")
    gates = _gates(max_error_increase, max_latency_ratio, min_agreement, min_requests)
    who = check_actor(actor) if actor else default_actor()
    token = None if repo is not None else admin_token(token_file, "--token-file")
    if repo is None and token is None:  # known now, not when the candidate must be aborted
        raise UsageError(
            "watch changes the canary: give --repo, or the admin token (--token-file or "
            "MSERVE_ADMIN_TOKEN) for the first --server"
        )
    figures, verdict = _watch(model, server, gates, duration, every, quiet=json)
    operation, fields = "", {}
    if verdict.outcome == "fail":
        reason = f"mserve canary watch: {verdict.reasons[0]}"[:200]
        operation, fields = "canary/abort", {"reason": reason}
    elif verdict.outcome == "pass" and promote:
        operation = "canary/promote"
    outcome = None
    if operation:
        fields["actor"] = who
        if repo is not None:
            outcome = change_in_repository(operation, model, fields, repo)
        else:
            outcome = change_on_server(
                operation, model, fields, server[0], token=token, timeout=60.0
            )
    if json:
        change = None if outcome is None else outcome.to_dict()
        emit_json({**figures.to_dict(), "verdict": verdict.to_dict(), "change": change})
    elif outcome is not None and outcome.change is not None:
        console().print(escape(LabelChange.from_dict(outcome.change).describe()))
    if outcome is not None and outcome.error is not None:
        error_line(f"{outcome.target}: {outcome.error}")
        raise typer.Exit(max(outcome.exit_code, 1))
    if verdict.outcome == "fail":
        error_line(f"the candidate of {model} was worse than the baseline: aborted")
        raise typer.Exit(1)
    if verdict.outcome == "wait":
        error_line(f"too few requests to judge the canary of {model}: {verdict.reasons[0]}")
        raise typer.Exit(3)
    if not promote and not json:
        console().print(f"the candidate of {escape(model)} held for {duration:g} s")


def _watch(
    model: str, servers: list[str], gates: Any, duration: float, every: float, *, quiet: bool
) -> tuple[Any, Any]:
    """Judge the canary every EVERY seconds until it fails or DURATION is over."""
    deadline = time.monotonic() + duration
    figures, verdict = _judge(model, servers, gates)
    watched = figures.canary
    while verdict.outcome != "fail" and time.monotonic() < deadline:
        if not quiet:
            _print(figures, verdict, brief=True)
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
        figures, verdict = _judge(model, servers, gates)
        if figures.canary != watched:
            raise Conflict(f"the canary of {model} changed while watched ({figures.canary})")
    if not quiet:
        _print(figures, verdict, brief=True)
    return figures, verdict


def _gates(error: float, latency: float, agreement: float, requests: int) -> Any:
    from mserve.canary_report import Gates

    if not (0 <= error <= 1 and 0 <= agreement <= 1):
        raise UsageError("--max-error-increase and --min-agreement are fractions, 0 to 1")
    if latency < 1 or requests < 1:
        raise UsageError("--max-latency-ratio is at least 1, --min-requests at least 1")
    return Gates(error, latency, agreement, requests)


def _judge(model: str, servers: list[str], gates: Any) -> tuple[Any, Any]:
    """The canary the replicas apply, its figures summed over all of them (each read once; one
    that cannot be read is listed with the reason), and the verdict."""
    from mserve.canary_report import Figures, Side, add_replica, canaries_in, judge
    from mserve.client import ServerClient
    from mserve.errors import MserveError

    from .lifecycle import expand_replicas

    replicas = expand_replicas(servers)
    texts, unreachable = {}, {}
    for replica in replicas:
        client = ServerClient(replica, timeout=5)
        try:
            texts[replica] = client.metrics()
        except MserveError as exc:
            unreachable[replica] = exc.message
        finally:
            client.close()
    if not texts:
        raise EnvironmentProblem(f"no replica could be read: {next(iter(unreachable.values()))}")
    applied = [canaries_in(text).get(model) for text in texts.values()]
    canary = next((found for found in applied if found is not None), None)
    if canary is None:
        raise Conflict(f"no replica applies a canary of {model}")
    baseline, candidate = Side(int(canary["baseline"])), Side(int(canary["candidate"]))
    figures = Figures(model, canary["canary"], baseline, candidate, unreachable=unreachable)
    for replica, text in texts.items():
        add_replica(figures, replica, text)
    return figures, judge(figures, gates)


def _print(figures: Any, verdict: Any, *, brief: bool = False) -> None:
    rows = table(
        None if brief else f"canary {escape(figures.canary)} of {escape(figures.model)}",
        "role",
        "version",
        "requests",
        "error rate",
        "p50 ms",
        "p99 ms",
    )
    for role, side in (("baseline", figures.baseline), ("candidate", figures.candidate)):
        p50, p99 = side.latency.quantile(0.5), side.latency.quantile(0.99)
        rows.add_row(
            role,
            str(side.version),
            str(side.requests),
            f"{side.error_rate:.2%}",
            "-" if p50 is None else f"{p50 * 1000:.2f}",
            "-" if p99 is None else f"{p99 * 1000:.2f}",
        )
    console().print(rows)
    if figures.compared or figures.shadow:
        agreement = figures.agreement
        shown = "-" if agreement is None else f"{agreement:.2%}"
        dropped = figures.shadow.get("dropped", 0)
        console().print(
            f"shadow: {figures.compared} compared, {shown} agree, largest difference "
            f"{figures.largest_difference:.3g}" + (f", {dropped} dropped" if dropped else "")
        )
    unreachable = "".join(
        f"; {escape(url)} unreachable: {escape(why)}" for url, why in figures.unreachable.items()
    )
    console().print(f"applied by {len(figures.applied_by)} replica(s){unreachable}")
    console().print(f"verdict: {verdict.outcome}" + "".join(f"; {r}" for r in verdict.reasons))
