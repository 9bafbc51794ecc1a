"""PyTorch models, exported with ``torch.onnx.export``.

Sources: ``.pt2`` files from ``torch.export.save`` (an ExportedProgram; ``torch.export.load``
unpickles parts of the archive, so it needs --trust-source), TorchScript ``.pt`` files
(``torch.jit.save``: code, run when loaded; --trust-source too), a module built by
``--from-python`` (with ``--weights``, a state dict loaded weights-only), and
in-process ``nn.Module`` objects. The dynamo exporter is tried first, with a dynamic batch axis;
when it fails, the TorchScript exporter is used and the manifest notes why.

Input names are forward's parameter names; output names come from what forward returns
(dictionary keys, named-tuple fields, ``output_0``... for tuples, ``output`` for one tensor).
"""

from __future__ import annotations

import inspect
import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mserve.errors import ConversionError, InputError, UsageError, foreign_message
from mserve.inputs import bind, check_sample
from mserve.runtime import max_opset

from .registry import Conversion, package_version, quiet, require

TORCHSCRIPT_SUFFIXES = (".pt", ".pth")
# The opset torch 2.13's exporters target; lower when onnxruntime cannot load it.
TORCH_OPSET = 20


class TorchConverter:
    name = "torch"

    def runs_code(self, path: Path) -> str:
        if path.suffix.lower() == ".pt2":
            return (
                "loading a .pt2 archive unpickles parts of it (torch.export.load), which runs "
                "code stored in it"
            )
        return "a TorchScript file is code, run when it is loaded and when the model runs"

    def detect(self, path: Path) -> bool:
        return path.suffix.lower() in (".pt2", *TORCHSCRIPT_SUFFIXES)

    def accepts(self, obj: Any) -> bool:
        return any(c.__module__.startswith("torch.") for c in type(obj).__mro__)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        torch = require("torch", "torch")
        try:
            with quiet():
                if path.suffix.lower() == ".pt2":
                    return torch.export.load(str(path)), []
                return torch.jit.load(str(path), map_location="cpu"), []
        except Exception as exc:  # torch raises RuntimeError, ValueError, zipfile errors...
            kind = "torch.export" if path.suffix.lower() == ".pt2" else "TorchScript"
            raise UsageError(
                f"{path.name} is not a {kind} file ({foreign_message(exc)}); for a state dict, use "
                "--from-python MODULE:FUNCTION --weights FILE"
            ) from None

    def load_weights(self, model: Any, path: Path) -> Any:
        torch = require("torch", "torch")
        if not path.is_file():
            raise UsageError(f"weights file {path} does not exist")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # unpickling refused, missing or unexpected keys, bad shapes
            raise UsageError(
                f"cannot load weights from {path.name}: {foreign_message(exc)}"
            ) from None
        return model

    def convert(self, model: Any, sample: Any, options: Mapping[str, Any]) -> Conversion:
        torch = require("torch", "torch")
        require("onnxscript", "torch")
        # The exporter logs (not warns) that optional torchvision operators are unavailable.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        import numpy as np

        if sample is None:
            raise UsageError("PyTorch models need --sample: it fixes the input shapes and dtypes")
        program = model if isinstance(model, torch.export.ExportedProgram) else None
        module = program.module() if program is not None else model
        names = _input_names(module, torch)
        bound = bind(names, sample)
        feeds = {n: np.ascontiguousarray(np.asarray(bound[n])) for n in names}
        if program is not None:  # an ExportedProgram declares its input shapes; a module does not
            check_sample(_declared_shapes(program, names), feeds)
        tensors = tuple(torch.from_numpy(feeds[n]) for n in names)
        if program is None:
            module.eval()
        with torch.no_grad(), quiet():
            try:
                returned = module(*tensors)
            except Exception as exc:  # e.g. a sample of the wrong width for a Linear layer
                raise InputError(f"the model fails on the sample: {_torch_message(exc)}") from None
        outputs = _named_outputs(returned, torch)
        onnx_model, exporter, notes = _export(
            program or module, tensors, names, list(outputs), torch
        )
        _name_batch_axis(onnx_model)
        first = onnx_model.graph.input[0].type.tensor_type.shape.dim
        if program is not None and first and first[0].HasField("dim_value"):
            notes.append(
                f"the batch size is fixed at {first[0].dim_value}: save the ExportedProgram with "
                "torch.export.export(..., dynamic_shapes=...) for a variable batch"
            )
        return Conversion(
            model=onnx_model,
            feeds=feeds,
            expected={name: t.detach().cpu().numpy() for name, t in outputs.items()},
            source={
                "framework": "pytorch",
                "framework_version": package_version("torch"),
                "converter": f"torch.onnx ({exporter})",
                "converter_version": package_version("torch"),
                "onnxscript_version": package_version("onnxscript"),
                "module": type(module).__name__,
            },
            notes=notes,
        )


def _declared_shapes(program: Any, names: list[str]) -> dict[str, list[object]]:
    """The shapes an ExportedProgram was exported with, by input name (symbols: variable)."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user_inputs = program.graph_signature.user_inputs
    return {
        name: list(placeholders[node].meta["val"].shape)
        for name, node in zip(names, user_inputs, strict=False)
        if node in placeholders and "val" in placeholders[node].meta
    }


def _torch_message(exc: BaseException) -> str:
    """TorchScript puts its interpreter's trace first and the error last: keep the error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("The following operation failed"):
        return foreign_message(type(exc)(re.sub(r"^\w+Error: ", "", lines[-1])))
    return foreign_message(exc)


def _input_names(module: Any, torch: Any) -> list[str]:
    if isinstance(module, torch.jit.ScriptModule):
        return [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
    parameters = inspect.signature(module.forward).parameters.values()
    names = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if not names:
        raise ConversionError("cannot name the inputs: forward() takes no positional parameters")
    return names


def _named_outputs(returned: Any, torch: Any) -> dict[str, Any]:
    if isinstance(returned, torch.Tensor):
        items = [("output", returned)]
    elif isinstance(returned, Mapping):
        items = [(str(k), v) for k, v in returned.items()]
    elif isinstance(returned, tuple) and hasattr(returned, "_fields"):
        items = list(zip(returned._fields, returned, strict=True))
    elif isinstance(returned, tuple | list):
        items = [(f"output_{i}", v) for i, v in enumerate(returned)]
    else:
        raise ConversionError(f"forward() returns a {type(returned).__name__}, not tensors")
    if not all(isinstance(v, torch.Tensor) for _, v in items):
        raise ConversionError("forward() must return tensors (or a dict, tuple or list of them)")
    return dict(items)


def _export(
    model: Any, tensors: tuple[Any, ...], names: list[str], outputs: list[str], torch: Any
) -> tuple[Any, str, list[str]]:
    """ONNX for ``model``: dynamo with a dynamic batch axis, else the TorchScript exporter."""
    import onnx

    opset = min(TORCH_OPSET, max_opset())
    # A batch of one would be specialised to a constant: trace with at least two rows.
    traced = tuple(
        t.repeat(2, *[1] * (t.ndim - 1)) if t.ndim and t.shape[0] == 1 else t for t in tensors
    )
    notes: list[str] = []
    if not isinstance(model, torch.jit.ScriptModule):
        try:
            with quiet():
                return (
                    _dynamo(model, traced, names, outputs, opset=opset, torch=torch),
                    "dynamo",
                    notes,
                )
        except Exception as exc:  # dynamo fails on data-dependent control flow and more
            notes.append(
                f"the dynamo exporter failed ({foreign_message(exc)}); used the TorchScript one"
            )
    if isinstance(model, torch.export.ExportedProgram):
        raise ConversionError(f"cannot export this ExportedProgram: {notes[-1]}")
    axes = {name: {0: "batch"} for name in [*names, *outputs]}
    buffer = io.BytesIO()
    try:
        with quiet():
            torch.onnx.export(
                model,
                traced,
                buffer,
                dynamo=False,
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
            )
    except Exception as exc:  # unsupported operators name themselves in the message
        hint = ""
        if "DictConstruct" in str(exc):
            hint = " (TorchScript models must return tensors or tuples; save a dict-returning "
            hint += "model with torch.export.save instead)"
        raise ConversionError(
            f"torch.onnx cannot export this model: {foreign_message(exc)}{hint}"
        ) from None
    return onnx.load_from_string(buffer.getvalue()), "torchscript", notes


def _dynamo(
    model: Any,
    args: tuple[Any, ...],
    names: list[str],
    outputs: list[str],
    *,
    opset: int,
    torch: Any,
) -> Any:
    if isinstance(model, torch.export.ExportedProgram):  # its shapes were fixed when exported
        program = torch.onnx.export(
            model, args, dynamo=True, output_names=outputs, opset_version=opset
        )
        return program.model_proto
    batch = torch.export.Dim("batch")
    shapes = {name: ({0: batch} if t.ndim else {}) for name, t in zip(names, args, strict=True)}
    program = torch.onnx.export(
        model,
        args,
        dynamo=True,
        input_names=names,
        output_names=outputs,
        dynamic_shapes=shapes,
        opset_version=opset,
    )
    return program.model_proto


def _name_batch_axis(model: Any) -> None:
    """torch names a dynamic axis after its internal symbol (s23); the batch axis is "batch"."""
    values = [*model.graph.input, *model.graph.output]
    firsts = {
        v.type.tensor_type.shape.dim[0].dim_param for v in values if v.type.tensor_type.shape.dim
    }
    if len(firsts) != 1 or not (symbol := firsts.pop()) or symbol == "batch":
        return
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = "batch"


converter = TorchConverter()
