"""Server-wide settings; per-model serving settings in model.json override the defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mserve.errors import UsageError


@dataclass(frozen=True)
class BatchSettings:
    """Dynamic batching and admission for one model (from flags, then model.json "settings")."""

    max_batch_size: int = 0  # 0 or 1: no batching, each request runs on its own
    max_queue_delay_ms: float = 0.0  # wait this long for more requests before running a batch
    max_queue: int = 256  # requests waiting beyond this are refused at once with 503
    timeout_s: float = 30.0  # a request not answered by then gets 504
    threads: int = 0  # onnxruntime intra-op threads (0: the CPUs the server may use)
    providers: tuple[str, ...] = ()  # onnxruntime providers, in order (none: the CPU)

    def override(self, settings: dict[str, Any]) -> BatchSettings:
        known = {k: settings[k] for k in self.__dataclass_fields__ if k in settings}
        if isinstance(known.get("providers"), str):  # "cuda" means ["cuda"], not its letters
            known["providers"] = [known["providers"]]
        try:
            updated = replace(self, **{k: type(getattr(self, k))(v) for k, v in known.items()})
        except (TypeError, ValueError):
            raise UsageError(f"invalid serving settings in model.json: {known}") from None
        return updated

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions to serve: the newest N that load (or all), plus every labelled version."""

    latest: int | None = 1  # None: all

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        if text == "all":
            return cls(None)
        kind, _, number = text.partition(":")
        if kind == "latest" and number.isdigit() and int(number) > 0:
            return cls(int(number))
        raise UsageError(f"--version-policy {text!r}: use latest:N or all")


@dataclass(frozen=True)
class ServerSettings:
    repository: Path  # the folder served (with SOURCE: the cache of its versions)
    source: str | None = None  # an object store's URL, when serving from one
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 8001  # 0: no gRPC endpoint
    poll_interval_s: float = 1.0
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    defaults: BatchSettings = field(default_factory=BatchSettings)
    max_body_bytes: int = 64 * 1024 * 1024
    access_log: bool = True
    shutdown_grace_s: float = 30.0
    drain_pause_s: float = 0.0  # SIGTERM: serving on this long with readiness off, then closing
    read_timeout_s: float = 60.0  # a request must arrive whole within this (408 beyond)
    max_connections: int = 0  # open connections, both ports (0: what the file limit allows)
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides the bound address and loopback
    admin_token: str | None = field(default=None, repr=False)  # None: the admin API is off
    model_name: str | None = None  # the repository is this one model's folder (KServe's layout)
    json_logs: bool = False  # log lines (and the access log) as JSON on stdout
