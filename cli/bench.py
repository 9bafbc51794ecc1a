"""``mserve bench``: latency and throughput of a version, locally (onnxruntime in-process, a
batch-size sweep) or against a server (a concurrency sweep), with gates a CI job can rely on.

The command parses options, shows progress and reports; the runs are mserve.bench's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mserve.errors import UsageError
from mserve.reference import Reference

from .options import DEFAULT_REPO, JsonOption, LocalOrServerOption, RefArgument, RepoOption

if TYPE_CHECKING:
    from mserve.bench.feeds import InputSource

RANDOM = Path("random")  # --input random: generated values, even where samples are stored


def bench_command(
    ref: RefArgument,
    *,
    repo: RepoOption = DEFAULT_REPO,
    server: LocalOrServerOption = None,
    batch_size: Annotated[
        list[int] | None,
        typer.Option(metavar="N", help="Rows per request; repeat for a sweep [default: 1]."),
    ] = None,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(
            metavar="N", help="Requests in flight (--server); repeat for a sweep [default: 1]."
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Time per step [default: 5, unless --iterations]."),
    ] = None,
    iterations: Annotated[
        int | None, typer.Option(metavar="N", help="Requests per step instead (local only).")
    ] = None,
    warmup: Annotated[
        int, typer.Option(metavar="N", help="Untimed requests first (per connection remotely).")
    ] = 10,
    threads: Annotated[
        int, typer.Option(metavar="N", help="onnxruntime intra-op threads (0: its default).")
    ] = 0,
    provider: Annotated[
        str, typer.Option(metavar="NAME", help="onnxruntime provider: cpu, cuda, tensorrt, ...")
    ] = "cpu",
    shape: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=D1,D2,...",
            help="Shape of a generated input with variable dimensions (the first follows "
            "--batch-size when it is the batch axis).",
        ),
    ] = None,
    input_: Annotated[
        Path | None,
        typer.Option(
            "--input",
            metavar="FILE|random",
            help="Input rows (.json, .npy, .npz, .csv), or 'random' for values generated from "
            "the signature [default: the version's stored samples, else random].",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        str, typer.Option(metavar="v2-json|v2-binary|tfserving|grpc", help="Remote protocol.")
    ] = "v2-json",
    grpc_port: Annotated[
        int, typer.Option(metavar="PORT", help="The server's gRPC port (--protocol grpc).")
    ] = 8001,
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Load generator processes [default: one per 32 connections, one per core].",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="Also benchmark this version, in alternating rounds, and compare.",
            show_default=False,
        ),
    ] = None,
    max_regression: Annotated[
        float | None,
        typer.Option(
            metavar="PCT",
            help="Exit 1 if p50 or throughput is more than PCT% worse than --baseline's.",
            show_default=False,
        ),
    ] = None,
    max_p99_ms: Annotated[
        float | None,
        typer.Option(metavar="MS", help="Exit 1 if a step's p99 is above MS.", show_default=False),
    ] = None,
    min_throughput: Annotated[
        float | None,
        typer.Option(
            metavar="RPS", help="Exit 1 if a step answers fewer requests/s.", show_default=False
        ),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Also write the results as CSV.", show_default=False),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.png",
            help="Draw latency percentiles against throughput (or batch size); needs mserve[plot].",
            show_default=False,
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Measure latency (p50/p90/p95/p99/max) and throughput of a version; a failed request or
    gate exits 1."""
    from mserve.bench import Gates, judge, parse_shapes

    from .bench_report import report

    batch_sizes = batch_size or [1]
    concurrencies = concurrency or [1]
    if duration is not None and iterations is not None:
        raise UsageError("give --duration or --iterations, not both")
    seconds = None if iterations is not None else (duration if duration is not None else 5.0)
    positive = [*batch_sizes, *concurrencies, *([iterations] if iterations is not None else [])]
    if min(positive) < 1 or (seconds is not None and seconds <= 0) or warmup < 0:
        raise UsageError("sizes, counts and durations must be positive")
    if max_regression is not None and baseline is None:
        raise UsageError("--max-regression compares with a baseline: give --baseline REF")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError("--plot writes a PNG file: give FILE.png")
    gates = Gates(max_regression, max_p99_ms, min_throughput)
    shapes = parse_shapes(shape or [])
    source: InputSource = "random" if input_ == RANDOM else input_
    candidate = Reference.parse(ref)
    against = None if baseline is None else Reference.parse(baseline)
    if server is None:
        if concurrency is not None or workers is not None or protocol != "v2-json":
            raise UsageError("--concurrency, --workers and --protocol need --server")
        from mserve.bench.local import run_local
        from mserve.stores import open_repository

        with _Progress(quiet=json) as progress:
            run = run_local(
                open_repository(repo),
                candidate,
                against,
                batch_sizes=batch_sizes,
                seconds=seconds,
                iterations=iterations,
                warmup=warmup,
                threads=threads,
                provider_name=provider,
                shapes=shapes,
                source=source,
                progress=progress,
            )
    else:
        if iterations is not None or threads or provider != "cpu":
            raise UsageError("--iterations, --threads and --provider are for local runs")
        assert seconds is not None
        from mserve.bench.remote import run_remote

        with _Progress(quiet=json) as progress:
            run = run_remote(
                server,
                candidate,
                against,
                batch_sizes=batch_sizes,
                concurrencies=concurrencies,
                seconds=seconds,
                warmup=warmup,
                protocol=protocol,
                grpc_port=grpc_port,
                workers=workers,
                shapes=shapes,
                source=source,
                progress=progress,
            )
    checks = judge(run.results, run.baseline_results if baseline else None, gates)
    report(run, checks, json=json, csv=csv, plot=plot)
    if not all(check.passed for check in checks):
        raise typer.Exit(1)


class _Progress:
    """A live progress display on stderr (only on a terminal, never with --json): the
    mserve.bench.Progress a run reports to."""

    def __init__(self, quiet: bool) -> None:
        from .output import err_console

        self.enabled = not quiet and err_console().is_terminal
        self._progress: Any = None
        self._by_time: dict[Any, bool] = {}  # task -> its bar counts seconds (else requests)

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            from .output import err_console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[done]}"),
                TimeElapsedColumn(),
                console=err_console(),
                transient=True,
                refresh_per_second=4,
            )
            self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, description: str, seconds: float | None, iterations: int | None) -> Any:
        if self._progress is None:
            return None
        total = seconds if seconds is not None else iterations
        task = self._progress.add_task(description, total=total, done="")
        self._by_time[task] = seconds is not None
        return task

    def update(self, task: Any, done: int | None, elapsed: float) -> None:
        if self._progress is None or task is None:
            return
        by_time = self._by_time[task]
        text = f"{done} requests" if done is not None else ""
        self._progress.update(task, completed=elapsed if by_time else done, done=text)

    def finish(self, task: Any) -> None:
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)
