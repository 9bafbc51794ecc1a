"""`mserve serve --workers N`: throughput and CPU time per request with 1 and 2 workers under the
same load, interleaved in one run.

    python benchmarks/workers.py [--rounds 3] [--seconds 5] [--concurrency 64]

Two set-ups, each with 1 and 2 workers (onnxruntime at one thread per worker):
- "one core": the server (every worker) pinned to CPU 0, wrk to CPU 1. Both builds get the same
  CPU, so 2 workers against 1 shows what the supervisor and the sharing of one port cost.
- "two cores": the server on CPUs 0-1, wrk on CPU 1 too. What a second worker gains when it has
  a core, on a machine where the load generator takes one of only two: the ceiling is wrk's.
CPU time per request is the server's processes' user+system time over the requests answered.
Models: the tiny logistic regression and the MLP 256-1024-1024-10 (inline) of server.py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import launch
from server import BIN, HERE, bodies, build_models

SETUPS = {"one core": ("0", "1"), "two cores": ("0-1", "1")}  # server CPUs, wrk CPU
MODELS = ("tiny", "mlp-inline")
TICKS = 100  # clock ticks per second of /proc/<pid>/stat


def cpu_seconds(pid: int) -> float:
    """User + system time of PID and its children (the workers), living ones."""
    total = 0.0
    for process in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def wrk(cpu: str, url: str, body: Path, concurrency: int, seconds: int) -> tuple[float, int]:
    """Requests per second and requests answered (non-2xx count as errors: there are none)."""
    command = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s"]
    command += ["--timeout", "10s", "-s", str(HERE.parent.parent / "shared/loadgen/post.lua"), url]
    out = subprocess.run(
        command, env={"BODYFILE": str(body)}, capture_output=True, text=True, check=True
    ).stdout
    fields = dict(kv.split("=") for kv in out.split("RESULT ", 1)[1].split())
    if float(fields["errors"]):
        raise RuntimeError(f"{fields['errors']} errors: {out}")
    rps = float(fields["rps"])
    return rps, round(rps * seconds)


def run(
    repo: Path, workers: int, setup: str, *, body: Path, args: argparse.Namespace
) -> tuple[float, float]:
    server_cpus, wrk_cpu = SETUPS[setup]
    url = f"http://127.0.0.1:{args.port}"
    command = ["taskset", "-c", server_cpus, str(BIN / "mserve"), "serve", str(repo)]
    command += ["--port", str(args.port), "--grpc-port", "0", "--no-access-log"]
    command += ["--threads", "1", "--workers", str(workers)]
    process = launch(command, f"{url}/v2/health/ready")
    try:
        time.sleep(1 if workers == 1 else 3)  # every worker ready, not only the first
        target = f"{url}/v2/models/{body.stem}/infer"
        wrk(wrk_cpu, target, body, args.concurrency, 2)  # warm-up
        before = cpu_seconds(process.pid)
        rps, answered = wrk(wrk_cpu, target, body, args.concurrency, args.seconds)
        used = cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait(timeout=60)
    return rps, used / answered * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mserve-workers-bench-"))
    repo = folder / "models"
    build_models(repo)
    made = bodies(folder)
    figures: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for round_number in range(args.rounds):
        order = (1, 2) if round_number % 2 == 0 else (2, 1)
        for setup in SETUPS:
            for model in MODELS:
                for workers in order:
                    body = made[f"{model}-json"][0]
                    rps, cpu_us = run(repo, workers, setup, body=body, args=args)
                    figures.setdefault((setup, model, workers), []).append((rps, cpu_us))
                    print(
                        f"round {round_number + 1} {setup:9} {model:10} workers={workers} "
                        f"{rps:9.1f} req/s {cpu_us:7.1f} us CPU/request",
                        flush=True,
                    )
    print("\nmedians, and 2 workers against 1:")
    for setup in SETUPS:
        for model in MODELS:
            one = [statistics.median(v) for v in zip(*figures[(setup, model, 1)], strict=True)]
            two = [statistics.median(v) for v in zip(*figures[(setup, model, 2)], strict=True)]
            print(
                f"{setup:9} {model:10} 1: {one[0]:9.1f} req/s {one[1]:7.1f} us/req   "
                f"2: {two[0]:9.1f} req/s {two[1]:7.1f} us/req   "
                f"throughput x{two[0] / one[0]:.2f}, CPU/request x{two[1] / one[1]:.2f}"
            )


if __name__ == "__main__":
    main()
