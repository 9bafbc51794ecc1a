"""ONNX files as a source: validated, their external data confined, and copied."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mserve import onnx_files
from mserve.inputs import bind, check_sample, to_feeds
from mserve.signature import Signature

from .registry import Conversion, package_version


class OnnxFileConverter:
    name = "onnx"

    def runs_code(self, path: Path) -> str:
        # protobuf data; onnxruntime's CPU kernels neither run code nor open files, and the
        # external data it names is read confined to the model's folder (mserve.onnx_files)
        return ""

    def detect(self, path: Path) -> bool:
        return path.suffix.lower() == ".onnx"

    def accepts(self, obj: Any) -> bool:
        import onnx

        return isinstance(obj, onnx.ModelProto)

    def load(self, path: Path) -> tuple[Any, list[str]]:
        return onnx_files.load(path), []

    def convert(self, model: Any, sample: Any, options: Mapping[str, Any]) -> Conversion:
        signature = Signature.from_onnx(model)
        feeds = {}
        if sample is not None:
            bound = bind([spec.name for spec in signature.inputs], sample)
            check_sample({spec.name: spec.shape for spec in signature.inputs}, bound)
            feeds = to_feeds(signature.inputs, bound)
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


converter = OnnxFileConverter()
