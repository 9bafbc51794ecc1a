"""Converters from training frameworks to ONNX, registered as ``mserve.converters`` entry points."""

from .export import ExportResult, export

__all__ = ["ExportResult", "export"]
