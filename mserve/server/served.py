"""A version being served: its files' manifest, its onnxruntime session and its executor."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from mserve.manifest import Manifest
from mserve.protocol.tensors import Plan
from mserve.runtime import ModelRunner

from .batching import Batcher, Unbatched
from .settings import BatchSettings

if TYPE_CHECKING:
    from mserve.signature import Signature


@dataclass
class ServedVersion:
    model: str
    version: int
    manifest: Manifest
    runner: ModelRunner
    settings: BatchSettings
    executor: Unbatched | Batcher
    load_seconds: float = 0.0

    @property
    def signature(self) -> Signature:
        return self.manifest.signature

    @cached_property
    def version_text(self) -> str:
        return str(self.version)

    @cached_property
    def plan(self) -> Plan:
        """What the codecs need of this version, worked out once."""
        return Plan.of(self.signature, self.runner.output_names)

    @cached_property
    def providers(self) -> list[str]:
        """The onnxruntime providers this version runs on, by short name, in order."""
        from mserve.providers import short_name

        return [short_name(name) for name in self.runner.session.get_providers()]

    @cached_property
    def threads(self) -> int:
        """onnxruntime's intra-op threads for this version (its default: the cores usable)."""
        from mserve.cpus import usable_cpus

        threads = int(self.runner.session.get_session_options().intra_op_num_threads)
        return threads or usable_cpus()[0]

    @cached_property
    def unbatched(self) -> Unbatched | None:
        """The executor, when batching is off (cheap requests may then run inline)."""
        return self.executor if isinstance(self.executor, Unbatched) else None
