"""``mserve serve``: the model server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mserve.errors import UsageError
from mserve.reference import check_model_name

from .options import DEFAULT_REPO, TOKEN_VARIABLE, admin_token, repository_option

MAX_WORKERS = 64
MAX_PORT = 65535


def serve_command(
    repository: Annotated[
        str | None,
        typer.Argument(
            metavar="[REPO]",
            help="Model repository to serve [default: --repo, MSERVE_REPO, or ./models].",
            show_default=False,
            callback=repository_option,
        ),
    ] = None,
    *,
    repo: Annotated[
        str,
        typer.Option(
            "--repo",
            metavar="DIR|URL",
            envvar="MSERVE_REPO",
            help="Model repository.",
            callback=repository_option,
        ),
    ] = DEFAULT_REPO,
    host: Annotated[
        str,
        typer.Option(envvar="MSERVE_HOST", help="Address to bind (loopback unless you say so)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MSERVE_PORT", help="HTTP port.")] = 8000,
    grpc_port: Annotated[
        int,
        typer.Option(envvar="MSERVE_GRPC_PORT", help="KServe V2 gRPC port (0: no gRPC)."),
    ] = 8001,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            envvar="MSERVE_POLL_INTERVAL",
            metavar="SECONDS",
            help="How often to look for new versions [default: 1, or 10 on an object store].",
            show_default=False,
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            envvar="MSERVE_CACHE_DIR",
            help="Where a server on an object store keeps the versions it serves "
            "[default: ~/.cache/mserve/<hash of the URL>].",
            show_default=False,
        ),
    ] = None,
    version_policy: Annotated[
        str,
        typer.Option(
            envvar="MSERVE_VERSION_POLICY",
            metavar="latest:N|all",
            help="Versions to serve, besides labelled ones.",
        ),
    ] = "latest:1",
    max_batch_size: Annotated[
        int,
        typer.Option(
            envvar="MSERVE_MAX_BATCH_SIZE",
            metavar="N",
            help="Dynamic batching: rows per batch (0: off).",
        ),
    ] = 0,
    batch_delay_ms: Annotated[
        float,
        typer.Option(
            envvar="MSERVE_BATCH_DELAY_MS",
            metavar="MS",
            help="Dynamic batching: longest wait for more requests.",
        ),
    ] = 0.0,
    max_queue: Annotated[
        int,
        typer.Option(
            envvar="MSERVE_MAX_QUEUE",
            metavar="N",
            help="Requests that may wait per version; more get 503.",
        ),
    ] = 256,
    timeout: Annotated[
        float,
        typer.Option(
            envvar="MSERVE_TIMEOUT",
            metavar="SECONDS",
            help="Answer 504 to a request waiting longer.",
        ),
    ] = 30.0,
    threads: Annotated[
        int,
        typer.Option(
            envvar="MSERVE_THREADS",
            metavar="N",
            help="onnxruntime threads per model (0: onnxruntime's default; under a cgroup CPU "
            "quota or with --workers, the cores usable, shared among the workers).",
        ),
    ] = 0,
    provider: Annotated[
        list[str] | None,
        typer.Option(
            envvar="MSERVE_PROVIDER",
            metavar="NAME",
            help="onnxruntime execution provider (cpu, cuda, tensorrt, openvino, coreml, ...); "
            "repeat for an order of preference: those this onnxruntime lacks are skipped "
            '[default: cpu; per model: "providers" in model.json].',
            show_default=False,
        ),
    ] = None,
    max_body_mb: Annotated[
        float,
        typer.Option(
            envvar="MSERVE_MAX_BODY_MB", metavar="MB", help="Largest request body (413 beyond)."
        ),
    ] = 64.0,
    access_log: Annotated[
        bool,
        typer.Option(
            envvar="MSERVE_ACCESS_LOG",
            help="Write a JSON line per request (stderr; stdout with --log-format json).",
        ),
    ] = True,
    read_timeout: Annotated[
        float,
        typer.Option(
            envvar="MSERVE_READ_TIMEOUT",
            metavar="SECONDS",
            help="A request must arrive whole within this (408).",
        ),
    ] = 60.0,
    max_connections: Annotated[
        int,
        typer.Option(
            envvar="MSERVE_MAX_CONNECTIONS",
            metavar="N",
            help="Open connections, both ports; more are refused (0: what the file limit allows).",
        ),
    ] = 0,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            envvar="MSERVE_SHUTDOWN_GRACE",
            metavar="SECONDS",
            help="On SIGTERM, how long requests in flight may finish.",
        ),
    ] = 30.0,
    drain_pause: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            envvar="MSERVE_DRAIN_PAUSE",
            help="On SIGTERM, readiness turns 503 at once but everything is served this long "
            "more, until a load balancer has seen it; then connections close.",
        ),
    ] = 0.0,
    workers: Annotated[
        int,
        typer.Option(
            metavar="N",
            envvar="MSERVE_WORKERS",
            help="Processes serving the same ports, each with every model loaded: one per "
            "core the server may use. /metrics adds them up; admin changes reach them all.",
        ),
    ] = 1,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="MSERVE_ALLOWED_HOST",
            metavar="NAME",
            help=(
                "A Host name clients may use besides loopback and the bound address "
                "(repeat it; '*' allows any). Others get 400, which stops DNS rebinding."
            ),
            show_default=False,
        ),
    ] = None,
    no_admin: Annotated[
        bool,
        typer.Option(
            "--no-admin",
            envvar="MSERVE_NO_ADMIN",
            help="The admin API off on purpose (a platform manages the server): then any "
            "--host may be bound without a token.",
        ),
    ] = False,
    model_name: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            envvar="MSERVE_MODEL_NAME",
            help="Serve REPO as the folder of one model called NAME: its versions and "
            "model.json at the top, as KServe mounts a model at /mnt/models.",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            metavar="text|json",
            envvar="MSERVE_LOG_FORMAT",
            help="Log lines as text on stderr, or as JSON on stdout with the access log "
            "(what container platforms collect).",
        ),
    ] = "text",
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            envvar="MSERVE_ADMIN_TOKEN_FILE",
            help=(
                f"Turn the admin API on with the token in FILE [default: ${TOKEN_VARIABLE}; "
                "neither: the admin API is off]."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve every model in a repository over KServe V2 and TF Serving REST."""
    from mserve.server.run import serve
    from mserve.server.settings import BatchSettings, ServerSettings, VersionPolicy

    location = repository or repo
    source = None
    if "://" in location and not location.startswith("file://"):
        from mserve.server.mirror import default_cache

        source = location.rstrip("/")  # an object store: served from a local copy
        root = cache_dir or default_cache(source)
    else:
        root = Path(location.removeprefix("file://"))
        if not root.is_dir():
            raise UsageError(f"model repository {root} does not exist")
    if poll_interval is None:
        poll_interval = 1.0 if source is None else 10.0
    if (
        min(max_batch_size, max_queue, threads, max_connections, shutdown_grace, drain_pause) < 0
        or min(batch_delay_ms, max_body_mb) < 0
        or min(timeout, poll_interval, read_timeout) <= 0
    ):
        raise UsageError("sizes, delays and limits must be positive (or zero where allowed)")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers is 1 to {MAX_WORKERS}")
    if not (0 < port <= MAX_PORT and 0 <= grpc_port <= MAX_PORT):
        raise UsageError(f"ports are 1 to {MAX_PORT} (--grpc-port 0 turns gRPC off)")
    if provider:
        from mserve.providers import choose

        choose(provider)  # an unknown name, or none this onnxruntime offers: said now
    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format {log_format!r}: use text or json")
    if model_name is not None:
        if source is not None:
            raise UsageError(
                "--model-name serves one model's folder (KServe's /mnt/models); serve an "
                "object store as a repository"
            )
        check_model_name(model_name)
    token = None if no_admin else admin_token(admin_token_file, "--admin-token-file")
    if no_admin and (admin_token_file is not None or os.environ.get(TOKEN_VARIABLE)):
        raise UsageError(f"--no-admin and an admin token ({TOKEN_VARIABLE}) contradict")
    if token is None and not no_admin and not _loopback(host):
        raise UsageError(
            f"--host {host} is reachable from other machines: set {TOKEN_VARIABLE} or "
            "--admin-token-file first, or --no-admin (the server refuses to listen there "
            "with an admin API that has no token)"
        )
    serve(
        ServerSettings(
            repository=root,
            source=source,
            host=host,
            port=port,
            grpc_port=grpc_port,
            poll_interval_s=poll_interval,
            version_policy=VersionPolicy.parse(version_policy),
            defaults=BatchSettings(
                max_batch_size=max_batch_size,
                max_queue_delay_ms=batch_delay_ms,
                max_queue=max_queue,
                timeout_s=timeout,
                threads=threads,
                providers=tuple(provider or ()),
            ),
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            access_log=access_log,
            shutdown_grace_s=shutdown_grace,
            drain_pause_s=drain_pause,
            read_timeout_s=read_timeout,
            max_connections=max_connections,
            allowed_hosts=tuple(allowed_host or ()),
            admin_token=token,
            model_name=model_name,
            json_logs=log_format == "json",
        ),
        workers=workers,
    )


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it could resolve anywhere
        return False
