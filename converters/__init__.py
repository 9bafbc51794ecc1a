"""Converters from training frameworks to ONNX, each registered as a ``mserve.converters`` entry point."""

from .export import ExportResult, export

__all__ = ["ExportResult", "export"]
