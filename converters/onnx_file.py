"""ONNX files as a source: validated, their external data confined, and copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mserve import onnx_files
from mserve.errors import InputError
from mserve.runtime import coerce_tensor
from mserve.signature import Signature

from .registry import Conversion, package_version


class OnnxFileConverter:
    name = "onnx"

    def runs_code(self, path: Path) -> bool:
        return False  # protobuf: data only

    def detect(self, path: Path) -> bool:
        return path.suffix.lower() == ".onnx"

    def accepts(self, obj: Any) -> bool:
        import onnx

        return isinstance(obj, onnx.ModelProto)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        return onnx_files.load(path), []

    def convert(self, model: Any, sample: Any) -> Conversion:
        signature = Signature.from_onnx(model)
        feeds = {}
        if sample is not None:
            named = sample if isinstance(sample, dict) else _single(signature, sample)
            feeds = {
                spec.name: coerce_tensor(spec, named[spec.name])
                for spec in signature.inputs
                if spec.name in named
            }
            missing = [s.name for s in signature.inputs if s.name not in named]
            if missing:
                raise InputError(f"the sample has no data for input {', '.join(missing)}")
        return Conversion(
            model=model,
            feeds=feeds,
            expected=None,
            source={
                "framework": "onnx",
                "framework_version": package_version("onnx"),
                "converter": "none",
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
            },
        )


def _single(signature: Signature, sample: Any) -> dict[str, Any]:
    if len(signature.inputs) != 1:
        names = ", ".join(s.name for s in signature.inputs)
        raise InputError(f"the model takes several inputs ({names}); give a .npz or .json object")
    return {signature.inputs[0].name: sample}


converter = OnnxFileConverter()
