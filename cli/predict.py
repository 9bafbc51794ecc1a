"""``mserve predict``: run a version on an input and print its outputs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mserve.reference import Reference
from mserve.stores import open_repository

from .options import DEFAULT_REPO, JsonOption, LocalOrServerOption, RefArgument, RepoOption
from .output import console, emit_json, escape, table


def predict_command(
    ref: RefArgument,
    *,
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON|@FILE",
            help=(
                "A nested list (single-input models), an object keyed by input name, "
                "or @FILE (.json, .npy, .npz, .csv)."
            ),
            show_default=False,
        ),
    ],
    repo: RepoOption = DEFAULT_REPO,
    server: LocalOrServerOption = None,
    json: JsonOption = False,
) -> None:
    """Run a version locally with onnxruntime (or on a server) and print its outputs."""
    from mserve import inputs

    reference = Reference.parse(ref)
    data = inputs.parse_argument(input_)
    if server is not None:
        model, version, raw = _on_server(server, reference, data)
    else:
        from mserve.runtime import ModelRunner
        from mserve.verified import open_model

        repository = open_repository(repo)
        model, version = repository.resolve(reference)
        runner = ModelRunner.open_verified(open_model(repository, model, version)[1])
        raw = runner.run(data)  # bound to the signature as the server binds a request
    outputs = {name: _plain(value) for name, value in raw.items()}
    if json:
        emit_json({"model": model, "version": version, "outputs": outputs})
        return
    values = table(f"{model}:{version}", "output", "value")
    for name, value in outputs.items():
        values.add_row(escape(name), escape(_compact(value)))
    console().print(values)


def _on_server(url: str, reference: Reference, data: Any) -> tuple[str, int, dict[str, Any]]:
    from mserve.client import ServerClient

    client = ServerClient(url)
    try:
        version, outputs = client.infer(reference, data)
    finally:
        client.close()
    return reference.model, version, outputs


def _plain(value: Any) -> Any:
    """Outputs as JSON-ready Python values (arrays -> nested lists)."""
    return value.tolist() if hasattr(value, "tolist") else value


def _compact(value: Any) -> str:
    """For people: 6 significant digits (float32 holds about 7), long outputs cut."""
    import json

    text = json.dumps(_rounded(value), default=str)
    return text if len(text) <= 2000 else text[:2000] + " …"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
