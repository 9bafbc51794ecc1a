"""``mserve bench``: latency and throughput of a version, locally (onnxruntime in-process, a
batch-size sweep) or against a server (a concurrency sweep), with gates a CI job can rely on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mserve.errors import UsageError
from mserve.reference import Reference

from .options import DEFAULT_REPO, JsonOption, LocalOrServerOption, RefArgument, RepoOption

if TYPE_CHECKING:
    from mserve.bench import Array, Measurement, Result

Measure = Callable[[float | None, int | None], "Measurement"]
RANDOM = Path("random")  # --input random: generated values, even where samples are stored


@dataclass
class Run:
    """What the report needs: who was measured, how, and the figures."""

    mode: str
    model: str
    version: int
    inputs: str
    setup: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    baseline_results: list[Result] = field(default_factory=list)


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
    if server is None:
        if concurrency is not None or workers is not None or protocol != "v2-json":
            raise UsageError("--concurrency, --workers and --protocol need --server")
        run = _local(
            repo,
            Reference.parse(ref),
            None if baseline is None else Reference.parse(baseline),
            batch_sizes=batch_sizes,
            seconds=seconds,
            iterations=iterations,
            warmup=warmup,
            threads=threads,
            provider=provider,
            shapes=shapes,
            input_file=input_,
            quiet=json,
        )
    else:
        if iterations is not None or threads or provider != "cpu":
            raise UsageError("--iterations, --threads and --provider are for local runs")
        assert seconds is not None
        run = _remote(
            server,
            Reference.parse(ref),
            None if baseline is None else Reference.parse(baseline),
            batch_sizes=batch_sizes,
            concurrencies=concurrencies,
            seconds=seconds,
            warmup=warmup,
            protocol=protocol,
            grpc_port=grpc_port,
            workers=workers,
            shapes=shapes,
            input_file=input_,
            quiet=json,
        )
    checks = judge(run.results, run.baseline_results if baseline else None, gates)
    report(run, checks, json=json, csv=csv, plot=plot)
    if not all(check.passed for check in checks):
        raise typer.Exit(1)


# -- local -----------------------------------------------------------------------------------


def _local(
    repo: Path,
    ref: Reference,
    baseline: Reference | None,
    *,
    batch_sizes: list[int],
    seconds: float | None,
    iterations: int | None,
    warmup: int,
    threads: int,
    provider: str,
    shapes: dict[str, tuple[int, ...]],
    input_file: Path | None,
    quiet: bool,
) -> Run:
    from mserve import bench
    from mserve.manifest import MODEL_FILE
    from mserve.repository import Repository

    repository = Repository(repo)
    providers = bench.provider(provider)

    @dataclass
    class Version:
        model: str
        number: int
        runner: bench.LocalModel
        specs: list[Any]
        data: dict[str, Array] | None
        source: str

        @classmethod
        def open(cls, reference: Reference) -> Version:
            model, number = repository.resolve(reference)
            specs = list(repository.manifest(model, number).signature.inputs)
            data, source = _data(specs, input_file, repository.version_dir(model, number))
            path = repository.version_file(model, number, MODEL_FILE)
            runner = bench.LocalModel(path, threads=threads, providers=providers)
            return cls(model, number, runner, specs, data, source)

        def measure(self, size: int, progress: _Progress) -> Measure:
            feeds = bench.make_inputs(self.specs, size, shapes=shapes, data=self.data)
            label = f"{self.model}:{self.number} batch {size}"

            def run(share_s: float | None, share_n: int | None) -> Measurement:
                task = progress.start(label, share_s, share_n)
                result = self.runner.measure(
                    feeds,
                    seconds=share_s,
                    iterations=share_n,
                    warmup=warmup,
                    tick=lambda done, elapsed: progress.update(task, done, elapsed),
                )
                progress.finish(task)
                return result

            return run

    ours = Version.open(ref)
    theirs = Version.open(baseline) if baseline is not None else None
    run = Run("local", ours.model, ours.number, ours.source, {"provider": providers[0]})
    if theirs is not None:
        run.baseline = {"model": theirs.model, "version": theirs.number}
    with _Progress(quiet) as progress:
        for size in batch_sizes:
            candidate = ours.measure(size, progress)
            against = theirs.measure(size, progress) if theirs is not None else None
            mine, other = bench.rounds(candidate, against, seconds=seconds, iterations=iterations)
            run.results.append(bench.Result.of(size, 1, mine))
            if other:
                run.baseline_results.append(bench.Result.of(size, 1, other))
    run.setup |= {
        "session_ms": round(ours.runner.session_seconds * 1000, 3),
        "first_inference_ms": round((ours.runner.first_inference_seconds or 0) * 1000, 3),
    }
    return run


def _data(
    specs: list[Any], input_file: Path | None, version_dir: Path | None
) -> tuple[dict[str, Array] | None, str]:
    """Rows to feed: --input, else the version's stored samples, else None (random values)."""
    import numpy as np

    from mserve import inputs
    from mserve.manifest import SAMPLE_INPUTS

    if input_file == RANDOM:
        return None, "random values from the signature"
    if input_file is not None:
        return inputs.to_feeds(specs, inputs.load_file(input_file)), f"file {input_file}"
    if version_dir is not None and (version_dir / SAMPLE_INPUTS).is_file():
        with np.load(version_dir / SAMPLE_INPUTS, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}, "stored samples"
    return None, "random values from the signature"


# -- remote ----------------------------------------------------------------------------------


def _remote(
    url: str,
    ref: Reference,
    baseline: Reference | None,
    *,
    batch_sizes: list[int],
    concurrencies: list[int],
    seconds: float,
    warmup: int,
    protocol: str,
    grpc_port: int,
    workers: int | None,
    shapes: dict[str, tuple[int, ...]],
    input_file: Path | None,
    quiet: bool,
) -> Run:
    from mserve import bench, loadgen
    from mserve.client import ServerClient

    if protocol not in loadgen.PROTOCOLS:
        raise UsageError(f"--protocol {protocol!r}: use one of {', '.join(loadgen.PROTOCOLS)}")

    @dataclass
    class Version:
        model: str
        number: int
        specs: list[Any]
        data: dict[str, Array] | None
        source: str

        @classmethod
        def find(cls, client: ServerClient, reference: Reference) -> Version:
            specs = client.signature(reference.model, client.resolve(reference))
            data, source = _data(specs, input_file, None)
            # One real request pins the version: a label or the default may move mid-run.
            number, _ = client.infer(
                reference, bench.make_inputs(specs, 1, shapes=shapes, data=data)
            )
            return cls(reference.model, number, specs, data, source)

        def target(self, size: int) -> loadgen.Target:
            return loadgen.infer_target(
                url,
                protocol,
                model=self.model,
                version=self.number,
                inputs=bench.make_inputs(self.specs, size, shapes=shapes, data=self.data),
                dtypes={s.name: s.dtype for s in self.specs},
                grpc_port=grpc_port,
            )

    client = ServerClient(url)
    try:
        ours = Version.find(client, ref)
        theirs = Version.find(client, baseline) if baseline is not None else None
    finally:
        client.close()
    run = Run("remote", ours.model, ours.number, ours.source, {"server": url, "protocol": protocol})
    if theirs is not None:
        run.baseline = {"model": theirs.model, "version": theirs.number}

    with _Progress(quiet) as progress, loadgen.LoadGenerator() as generator:

        def measure(target: loadgen.Target, c: int, label: str) -> Measure:
            def go(share_s: float | None, _: int | None) -> Measurement:
                return _in_background(
                    lambda: generator.run(
                        target,
                        concurrency=c,
                        seconds=share_s or seconds,
                        warmup=warmup,
                        workers=workers or loadgen.default_workers(c),
                    ),
                    progress,
                    progress.start(label, share_s, None),
                )

            return go

        top = max(concurrencies)
        ceiling = measure(
            loadgen.ceiling_target(ours.target(1)),
            top,
            f"load generator ceiling, {top} connections",
        )(min(2.0, seconds), None)
        run.setup |= {
            "workers": workers or loadgen.default_workers(top),
            "generator_ceiling_rps": bench.Result.of(1, top, [ceiling]).throughput_rps,
        }
        for size in batch_sizes:
            mine, other = ours.target(size), theirs.target(size) if theirs is not None else None
            for c in concurrencies:
                step = f"batch {size}, concurrency {c}"
                candidate = measure(mine, c, f"{ours.model}:{ours.number} {step}")
                against = measure(other, c, f"baseline {step}") if other is not None else None
                measured, compared = bench.rounds(
                    candidate, against, seconds=seconds, iterations=None
                )
                run.results.append(bench.Result.of(size, c, measured))
                if compared:
                    run.baseline_results.append(bench.Result.of(size, c, compared))
    return run


def _in_background(work: Callable[[], Measurement], progress: _Progress, task: Any) -> Measurement:
    """Run ``work`` on a thread while the progress display follows the clock."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        progress.update(task, None, time.monotonic() - started)
    progress.finish(task)
    if "error" in outcome:
        raise outcome["error"]
    result: Measurement = outcome["value"]
    return result


class _Progress:
    """A live progress display on stderr (only on a terminal, never with --json)."""

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
