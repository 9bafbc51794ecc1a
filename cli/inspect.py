"""``mserve list`` and ``mserve show``: what the repository holds."""

from __future__ import annotations

from typing import Any

from mserve.reference import Reference
from mserve.repository import ModelState
from mserve.signature import TensorSpec
from mserve.stores import open_repository

from .options import DEFAULT_REPO, JsonOption, RefArgument, RepoOption
from .output import console, emit_json, escape, table


def list_command(*, repo: RepoOption = DEFAULT_REPO, json: JsonOption = False) -> None:
    """List the models in the repository with their versions and labels (a model whose
    model.json cannot be read is listed with the problem)."""
    repository = open_repository(repo)
    rows: list[dict[str, Any]] = []
    for entry in repository.entries():
        state = entry.state or ModelState()
        rows.append(
            {
                "name": entry.name,
                "versions": entry.versions,
                "labels": state.labels,
                "retired": sorted(state.retired),
                "problem": entry.problem,
            }
        )
    if json:
        emit_json(rows)
        return
    columns = ["model", "versions", "latest", "labels", "retired"]
    problems = any(row["problem"] for row in rows)
    models = table(
        f"Models in {escape(repository.location)}", *columns, *(["problem"] if problems else [])
    )
    for row in rows:
        unknown = "?" if row["problem"] else "-"  # model.json unread: labels and retirements
        cells = [
            row["name"],
            _ranges(row["versions"]),
            str(row["versions"][-1]) if row["versions"] else "-",
            ", ".join(f"{k} -> {v}" for k, v in sorted(row["labels"].items())) or unknown,
            _ranges(row["retired"]) or unknown,
        ]
        models.add_row(*cells, *([escape(row["problem"]) or "-"] if problems else []))
    console().print(models)


def show_command(
    ref: RefArgument, *, repo: RepoOption = DEFAULT_REPO, json: JsonOption = False
) -> None:
    """Show a version's manifest: signature, source, parity figures, provenance."""
    repository = open_repository(repo)
    model, version = repository.resolve(Reference.parse(ref))
    manifest = repository.manifest(model, version)
    labels = [label for label, v in repository.state(model).labels.items() if v == version]
    if json:
        emit_json({**manifest.to_dict(), "labels": labels})
        return
    facts = table(None, "", "")
    facts.show_header = False
    facts.box = None
    facts.add_row("version", f"{model}:{version}" + (f"  ({', '.join(labels)})" if labels else ""))
    facts.add_row("created", manifest.created_at)
    source = manifest.source
    if source.get("converter", "none") == "none":
        origin = "ONNX file" + (f" made by {source['producer']}" if source.get("producer") else "")
    else:
        origin = (
            f"{source.get('framework', '?')} {source.get('framework_version', '')} via "
            f"{source['converter']} {source.get('converter_version', '')}"
        )
    facts.add_row("source", escape(origin.strip()))
    if source.get("file"):
        facts.add_row(
            "source file", escape(f"{source['file']} (sha256 {source.get('sha256', '?')[:12]}…)")
        )
    opsets = ", ".join(f"{d} {v}" for d, v in manifest.onnx.get("opset", {}).items())
    facts.add_row("onnx", f"IR {manifest.onnx.get('ir_version', '?')}, opset {opsets}")
    parity = manifest.parity
    facts.add_row(
        "parity",
        escape(
            parity.get("summary")
            or parity.get("method")
            or ("passed" if parity.get("passed") else "?")
        ),
    )
    for key, value in manifest.provenance.items():
        facts.add_row(key.replace("_", " "), escape(value))
    console().print(facts)
    for title, specs in (
        ("inputs", manifest.signature.inputs),
        ("outputs", manifest.signature.outputs),
    ):
        console().print(_spec_table(title, specs))


def _spec_table(title: str, specs: tuple[TensorSpec, ...]) -> Any:
    tensors = table(title, "name", "dtype", "shape")
    for spec in specs:
        tensors.add_row(escape(spec.name), escape(spec.dtype), escape(spec.shape_text()))
    return tensors


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    parts: list[str] = []
    for n in numbers:
        if parts and n == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts)
