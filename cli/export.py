"""``mserve export``: convert a model, check parity, publish the next version."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from mserve.errors import UsageError

from .options import DEFAULT_REPO, JsonOption, RepoOption
from .output import console, emit_json, err_console, escape, note, table

ToleranceOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="X|OUTPUT=X",
        help="Tolerance for every output (X) or for one (OUTPUT=X).",
        show_default=False,
    ),
]


def export_command(
    source: Annotated[
        Path | None,
        typer.Argument(
            metavar="[SOURCE]",
            help=(
                "Model file or directory: .onnx; scikit-learn .joblib/.pkl; PyTorch .pt2 or "
                "TorchScript .pt; TensorFlow SavedModel directory or Keras .keras; XGBoost "
                ".json/.ubj; LightGBM .txt. Only ONNX, XGBoost and LightGBM files load without "
                "--trust-source."
            ),
            show_default=False,
        ),
    ] = None,
    *,
    name: Annotated[
        str,
        typer.Option(
            "--name", "-n", metavar="NAME", help="Model name in the repository.", show_default=False
        ),
    ],
    repo: RepoOption = DEFAULT_REPO,
    framework: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help=(
                "Source framework: sklearn, torch, tensorflow, xgboost, lightgbm or onnx; "
                "detected from the file if omitted."
            ),
        ),
    ] = None,
    from_python: Annotated[
        str | None,
        typer.Option(
            metavar="MODULE:FUNCTION",
            help="Build the model by calling this function (importable from the working dir).",
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="PyTorch state dict to load into the model (loaded with weights_only=True).",
        ),
    ] = None,
    signature: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="SavedModel signature to export [default: serving_default]."
        ),
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Sample input (.npy, .npz, .json, .csv): fixes input types; parity runs on it.",
        ),
    ] = None,
    trust_source: Annotated[
        bool,
        typer.Option(
            "--trust-source",
            help=(
                "Allow a source whose loading or running can execute code stored in it or "
                "touch files: pickle/joblib, PyTorch .pt2 and TorchScript, TensorFlow "
                "SavedModel, Keras .keras. Only for files you trust."
            ),
        ),
    ] = False,
    atol: ToleranceOption = None,
    rtol: ToleranceOption = None,
    json: JsonOption = False,
) -> None:
    """Convert a model to ONNX, check parity with the source, and publish the next version."""
    from mserve.converters import export

    from mserve.parity import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance

    default_atol, atol_by_output = parse_tolerances("--atol", atol or [], DEFAULT_ATOL)
    default_rtol, rtol_by_output = parse_tolerances("--rtol", rtol or [], DEFAULT_RTOL)
    tolerance = Tolerance(
        default_atol,
        default_rtol,
        {
            name: (atol_by_output.get(name), rtol_by_output.get(name))
            for name in atol_by_output.keys() | rtol_by_output.keys()
        },
    )
    what = source.name if source else from_python
    with err_console().status(f"Exporting {what}", spinner="dots") if not json else nullcontext():
        result = export(
            source,
            name=name,
            repo=repo,
            sample=sample,
            framework=framework,
            trust_source=trust_source,
            tolerance=tolerance,
            from_python=from_python,
            weights=weights,
            signature=signature,
        )
    if json:
        emit_json(result.to_dict())
        return
    for message in result.notes:
        note(message)
    render_parity(result.manifest.parity)
    console().print(
        f"Published [bold]{name}:{result.version}[/] at {escape(result.location)}", soft_wrap=True
    )


def parse_tolerances(
    option: str, values: list[str], default: float
) -> tuple[float, dict[str, float]]:
    """``["1e-3", "probabilities=1e-2"]`` -> (1e-3, {"probabilities": 1e-2})."""
    per_output: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            parsed = float(number)
        except ValueError:
            raise UsageError(f"{option} {value!r}: expected a number or OUTPUT=NUMBER") from None
        if not parsed >= 0:
            raise UsageError(f"{option} {value!r}: a tolerance must be zero or positive")
        if name:
            per_output[name] = parsed
        else:
            default = parsed
    return default, per_output


def render_parity(parity: dict[str, Any]) -> None:
    outputs = parity.get("outputs")
    if not outputs:
        console().print(f"Parity: {parity.get('method', 'not checked')}")
        return
    figures = table(
        f"Parity on {parity['rows']} row(s)",
        *("output", "max abs", "max rel", "differ", "atol / rtol", "result"),
    )
    for name, o in outputs.items():
        figures.add_row(
            escape(name),
            _figure(o.get("max_abs_diff")),
            _figure(o.get("max_rel_diff")),
            f"{o['mismatches']}/{o['elements']}",
            f"{o['atol']:g} / {o['rtol']:g}",
            "[green]ok[/]" if o["passed"] else "[red]FAIL[/]",
        )
    console().print(figures)


def _figure(value: float | None) -> str:
    return "exact" if value is None else f"{value:.3g}"
