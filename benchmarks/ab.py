"""One build against another, interleaved in one run: the way a change to the server is judged.

    python benchmarks/ab.py --old /path/to/old/checkout [--rounds 3] [--seconds 5]

OLD is a source tree of the other build (e.g. ``git worktree add /tmp/old REV``). Its ``mserve``
package, with its ``cli`` and ``converters`` mapped inside as the install maps them, is put first
on PYTHONPATH, so the old build runs whole, under the same interpreter and libraries. Each round
runs both builds, in alternating order, on the tiny and MLP models at concurrency 1 and 64
(V2 JSON, with the server on CPU 0 and wrk on CPU 1) and over gRPC (h2load), then tiny at 64
with the access log on (written to a file).
Prints every figure and, at the end, the median ratio new/old of each row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from server import (
    BIN,
    INPUTS,
    bodies,
    build_models,
    check_grpc,
    grpc_body,
    grpc_load,
    load,
    start,
    stop,
)

ROWS = [("tiny", 1, "json"), ("tiny", 64, "json"), ("mlp", 1, "json"), ("mlp", 64, "json")]
ROWS += [("tiny", 64, "grpc"), ("mlp", 64, "grpc"), ("tiny", 64, "json+log")]


def importable(tree: Path) -> Path:
    """A folder where ``import mserve`` finds TREE's build whole (setuptools maps ``cli`` and
    ``converters`` into the package at install time; here symbolic links do)."""
    root = Path(tempfile.mkdtemp(prefix="mserve-old-"))
    shutil.copytree(tree / "mserve", root / "mserve")
    for folder in ("cli", "converters"):
        (root / "mserve" / folder).symlink_to(tree / folder)
    return root


def run_build(
    name: str,
    source: Path | None,
    models: Path,
    made: dict[str, tuple[Path, int | None]],
    seconds: int,
) -> dict[tuple[str, int, str], float]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    figures = {}
    port, grpc_port = 18611, 18612
    for log in (False, True):
        command = [str(BIN / "mserve"), "serve", str(models), "--port", str(port)]
        command += ["--grpc-port", str(grpc_port), "--threads", "1"]
        if not log:
            command.append("--no-access-log")
        log_file = models.parent / f"{name}-server.log"  # a real file, as in production
        server = start(command, f"http://127.0.0.1:{port}/v2/health/ready", env, log_file)
        try:
            for model, concurrency, kind in ROWS:
                if (kind == "json+log") != log:
                    continue
                if kind == "grpc":
                    address = f"127.0.0.1:{grpc_port}"
                    check_grpc(address, model, *INPUTS[model])
                    body = grpc_body(models.parent, model, *INPUTS[model])
                    label = f"{name} {model} grpc"
                    result = grpc_load(
                        label, address, body, concurrency=concurrency, seconds=seconds
                    )
                else:
                    result = load(
                        f"{name} {model} {kind}",
                        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                        made[f"{model}-json"][0],
                        None,
                        concurrency=concurrency,
                        seconds=seconds,
                    )
                figures[(model, concurrency, kind)] = float(result["rps"])
        finally:
            stop(server)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename}; old = {args.old}")
    work = Path(tempfile.mkdtemp(prefix="mserve-ab-"))
    old_tree = importable(args.old.resolve())
    build_models(work / "models")
    made = bodies(work)
    runs: dict[str, list[dict[tuple[str, int, str], float]]] = {"old": [], "new": []}
    for round_ in range(args.rounds):
        order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
        for name in order:
            source = old_tree if name == "old" else None
            runs[name].append(run_build(name, source, work / "models", made, args.seconds))
    print("\nmedian req/s, old -> new (ratio):")
    for row in ROWS:
        old = statistics.median(r[row] for r in runs["old"])
        new = statistics.median(r[row] for r in runs["new"])
        model, concurrency, kind = row
        label = f"{model} {kind} c={concurrency}"
        print(f"  {label:24} {old:9.1f} -> {new:9.1f}  ({new / old:.2f}x)")
    for name in ("old", "new"):
        grpc_share = statistics.median(
            r[("tiny", 64, "grpc")] / r[("tiny", 64, "json")] for r in runs[name]
        )
        print(f"  gRPC / V2 JSON, {name}: {grpc_share:.2f}x (tiny, c=64)")
        cost = statistics.median(
            1 - r[("tiny", 64, "json+log")] / r[("tiny", 64, "json")] for r in runs[name]
        )
        print(f"  access log cost, {name}: {cost:.1%} of tiny c=64 throughput")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
