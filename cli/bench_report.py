"""How ``mserve bench`` reports: a table and the verdict for people, JSON for machines, and
optionally a CSV file and a PNG plot (both written whole or not at all)."""

from __future__ import annotations

import csv as csv_module
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mserve.errors import EnvironmentProblem, MissingExtraError

from .output import console, emit_json, escape, table

if TYPE_CHECKING:
    from mserve.bench import GateCheck, Run

PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "max")
# The generator is probably the limit when a step gets this close to its ceiling.
CEILING_SHARE = 0.8


def report(
    run: Run, checks: list[GateCheck], *, json: bool, csv: Path | None, plot: Path | None
) -> None:
    document = to_json(run, checks)
    if csv is not None:
        _write(csv, _csv(run).encode())
    if plot is not None:
        _write(plot, _png(run))
    if json:
        emit_json(document)
        return
    out = console()
    rows = [(f"{run.model}:{run.version}", r) for r in run.results]
    if run.baseline is not None:
        base = f"{run.baseline['model']}:{run.baseline['version']}"
        rows += [(base, r) for r in run.baseline_results]
    title = f"{run.mode} benchmark, latency in ms; inputs: {run.inputs}"
    figures = table(
        escape(title), "version", "batch", "conc", "requests", "errors", "req/s", "rows/s",
        *PERCENTILE_KEYS,
    )  # fmt: skip
    for column in figures.columns:  # a narrow terminal folds figures, never cuts them
        column.overflow = "fold"
    for role, r in rows:
        figures.add_row(
            escape(role),
            str(r.batch_size),
            str(r.concurrency),
            str(r.requests),
            str(r.errors) if not r.errors else f"[red]{r.errors}[/] {r.errors_by_status}",
            f"{r.throughput_rps:,.1f}",
            f"{r.rows_per_s:,.1f}",
            *(f"{r.latency_ms[k]:.4g}" for k in PERCENTILE_KEYS),
        )
    out.print(figures)
    for line in _setup_lines(run):
        out.print(escape(line))
    for check in checks:
        colour = "green" if check.passed else "red"
        out.print(f"[{colour}]{escape(check.describe())}[/]")
    passed = all(c.passed for c in checks)
    out.print("[green]PASS[/]" if passed else "[red]FAIL[/]")


def to_json(run: Run, checks: list[GateCheck]) -> dict[str, Any]:
    """The --json document (its keys are a contract: tests pin them)."""
    return {
        "model": run.model,
        "version": run.version,
        "mode": run.mode,
        "inputs": run.inputs,
        "setup": run.setup,
        "results": [r.to_dict() for r in run.results],
        "baseline": None
        if run.baseline is None
        else {**run.baseline, "results": [r.to_dict() for r in run.baseline_results]},
        "passed": all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
    }


def _setup_lines(run: Run) -> list[str]:
    setup = run.setup
    if run.mode == "local":
        return [
            f"provider {setup['provider']}; session created in {setup['session_ms']:.1f} ms, "
            f"first inference {setup['first_inference_ms']:.2f} ms"
        ]
    ceiling = setup["generator_ceiling_rps"]
    lines = [
        f"load generator: {setup['workers']} process(es); its ceiling against the server's "
        f"cheapest endpoint: {ceiling:,.0f} req/s"
    ]
    for r in run.results:
        if r.throughput_rps >= CEILING_SHARE * ceiling:
            lines.append(
                f"warning: {r.step} reached {r.throughput_rps / ceiling:.0%} of the generator's "
                "ceiling: the client may be the limit (raise --workers)"
            )
    return lines


def _csv(run: Run) -> str:
    buffer = io.StringIO()
    writer = csv_module.writer(buffer)
    writer.writerow(
        ["role", "model", "version", "mode", "batch_size", "concurrency", "requests", "errors",
         "throughput_rps", "rows_per_s", *(f"{k}_ms" for k in PERCENTILE_KEYS)]
    )  # fmt: skip
    baseline = run.baseline or {}
    for role, model, version, results in (
        ("candidate", run.model, run.version, run.results),
        ("baseline", baseline.get("model"), baseline.get("version"), run.baseline_results),
    ):
        for r in results:
            writer.writerow(
                [role, model, version, run.mode, r.batch_size, r.concurrency, r.requests,
                 r.errors, r.throughput_rps, r.rows_per_s,
                 *(r.latency_ms[k] for k in PERCENTILE_KEYS)]
            )  # fmt: skip
    return buffer.getvalue()


def _png(run: Run) -> bytes:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "plot") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=100)
    sweep_batches = len({r.batch_size for r in run.results}) > 1
    baseline = run.baseline or {}
    for role, results, style in (
        (f"{run.model}:{run.version}", run.results, "-"),
        (f"{baseline.get('model')}:{baseline.get('version')} (baseline)", run.baseline_results,
         "--"),
    ):  # fmt: skip
        if not results:
            continue
        x = [r.batch_size if sweep_batches else r.throughput_rps for r in results]
        for key, marker, colour in (("p50", "o", "C0"), ("p90", "s", "C1"), ("p99", "^", "C3")):
            axes.plot(x, [r.latency_ms[key] for r in results], style, marker=marker,
                      color=colour, label=f"{role} {key}")  # fmt: skip
        if not sweep_batches:
            for r, at in zip(results, x, strict=True):
                axes.annotate(f"c={r.concurrency}", (at, r.latency_ms["p50"]), fontsize=8)
    if sweep_batches:
        axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size" if sweep_batches else "throughput (requests/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"mserve bench {run.model}:{run.version} ({run.mode})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    pyplot.close(figure)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a temporary file beside it, renamed into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise EnvironmentProblem(f"cannot write {path}: {exc.strerror}") from None
