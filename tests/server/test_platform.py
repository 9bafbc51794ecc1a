"""Serving on platforms: the admin API off on purpose (--no-admin), one model's folder as KServe
mounts it (--model-name), JSON logs on stdout, every flag from the environment, onnxruntime's
execution providers, and threads that fit the CPUs the process may use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mserve.cli.app import app
from typer.testing import CliRunner

from mserve.cpus import cgroup_quota, physical_cores, usable_cpus
from mserve.errors import EnvironmentProblem, UsageError
from mserve.providers import choose
from mserve.repository import LocalRepository
from tests.conftest import Server, free_port, one_line_error, wait_until

ROW = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
TOKEN = "test-admin-token-0123456789"


@pytest.fixture
def mounted(tmp_path: Path, repo3: Path) -> Path:
    """iris's folder alone, laid out as KServe mounts a model: /mnt/models/{1,2,3,model.json}."""
    folder = tmp_path / "mnt" / "models"
    shutil.copytree(repo3 / "iris", folder)
    return folder


@pytest.mark.slow
def test_one_models_folder_is_served_under_the_name_given(mounted: Path) -> None:
    server = Server(mounted, "--model-name", "flowers", "--no-admin", "--version-policy", "all")
    try:
        reply = httpx.post(f"{server.url}/v2/models/flowers/versions/2/infer", json=ROW)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_name"] == "flowers"
        assert httpx.get(f"{server.url}/v2/models/flowers/ready").status_code == 200
        assert httpx.get(f"{server.url}/v2/models/iris").status_code == 404
        # the admin API is off on purpose
        admin = httpx.get(f"{server.url}/admin/models", headers={"Authorization": "Bearer x"})
        assert admin.status_code == 403
        assert "admin API is off" in admin.json()["error"]
    finally:
        assert server.stop() == 0


def test_platform_flags_are_checked(mounted: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    one_line_error(
        runner.invoke(
            app, ["serve", str(mounted), "--no-admin"], env={"MSERVE_ADMIN_TOKEN": TOKEN}
        ),
        2,
        "--no-admin and an admin token (MSERVE_ADMIN_TOKEN) contradict",
    )
    one_line_error(
        runner.invoke(app, ["serve", str(mounted), "--host", "0.0.0.0"]), 2, "or --no-admin"
    )
    one_line_error(
        runner.invoke(app, ["serve", "s3://bucket/models", "--model-name", "x"]),
        2,
        "--model-name serves one model's folder",
    )
    one_line_error(
        runner.invoke(app, ["serve", str(mounted), "--log-format", "xml"]), 2, "use text or json"
    )
    one_line_error(
        runner.invoke(app, ["serve", str(mounted), "--provider", "warp-drive"]),
        2,
        "unknown provider 'warp-drive'",
    )
    one_line_error(
        runner.invoke(app, ["serve", str(mounted), "--provider", "tensorrt"]),
        3,
        "offers none of the providers asked for (tensorrt)",
    )


def test_no_admin_lets_any_address_be_bound(mounted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No other address than loopback may be bound here, so the settings the command would
    serve with are caught instead."""
    import mserve.server.run

    seen: list[Any] = []
    monkeypatch.setattr(mserve.server.run, "serve", lambda settings, **_: seen.append(settings))
    result = CliRunner().invoke(
        app,
        ["serve", str(mounted), "--host", "0.0.0.0", "--model-name", "flowers"],
        env={"MSERVE_NO_ADMIN": "1", "MSERVE_ADMIN_TOKEN": ""},
    )
    assert result.exit_code == 0, result.stderr
    (settings,) = seen
    assert (settings.host, settings.admin_token, settings.model_name) == (
        "0.0.0.0",
        None,
        "flowers",
    )


def test_every_serve_flag_has_an_environment_variable() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    missing = [p.name for p in options if not p.envvar]
    assert missing == []


@pytest.mark.slow
def test_json_logs_go_to_stdout_one_object_a_line(repo3: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MSERVE_LOG_FORMAT": "json", "MSERVE_PORT": str(port)}
    env["MSERVE_GRPC_PORT"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "mserve", "serve", str(repo3), "--version-policy", "all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/v2/health/ready").status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, timeout=60)
        assert httpx.post(f"{url}/v2/models/iris/versions/1/infer", json=ROW).status_code == 200
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    lines = [json.loads(line) for line in out.decode().splitlines()]
    messages = [line.get("message", "") for line in lines]
    assert any(m.startswith("onnxruntime threads per model: ") for m in messages)
    assert any(m == "loaded iris:1" for m in messages)
    assert any(line.get("path") == "/v2/models/iris/versions/1/infer" for line in lines)
    assert all({"ts", "level", "logger"} <= set(line) for line in lines if "message" in line)
    assert err.decode().strip() == ""


# -- execution providers ---------------------------------------------------------------------


def test_providers_are_named_one_way_and_fall_back_in_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert choose([]) == ["CPUExecutionProvider"]
    assert choose(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose(["cuda", "cpu"]) == ["CPUExecutionProvider"]
    assert "provider cuda not in this onnxruntime; using cpu" in caplog.text
    with pytest.raises(EnvironmentProblem, match=r"none of the providers asked for \(cuda\)"):
        choose(["cuda"])
    with pytest.raises(UsageError, match="unknown provider 'gpu'"):
        choose(["gpu"])


@pytest.mark.slow
def test_the_provider_in_use_shows_and_a_missing_one_fails_its_version(repo3: Path) -> None:
    LocalRepository(repo3).update_state("iris", lambda s: s.settings.update(providers="cuda"))
    server = Server(
        repo3,
        "--provider",
        "tensorrt",
        "--provider",
        "cpu",
        "--threads",
        "1",
        "--version-policy",
        "all",
        env={"MSERVE_ADMIN_TOKEN": TOKEN},
        wait=False,
    )
    try:
        # model.json asks for CUDA alone, which this onnxruntime lacks: no version loads
        status = {}

        def failed() -> bool:
            nonlocal status
            try:
                reply = httpx.get(
                    f"{server.url}/admin/models/iris", headers={"Authorization": f"Bearer {TOKEN}"}
                )
            except httpx.ConnectError:  # not listening yet
                return False
            status = reply.json() if reply.status_code == 200 else {}
            return bool(status) and all(v["state"] == "END" for v in status["versions"])

        assert wait_until(failed, timeout=60)
        assert "offers none of the providers asked for (cuda)" in status["versions"][0]["error"]
        # back to the server's order: tensorrt (missing, skipped), then cpu
        LocalRepository(repo3).update_state("iris", lambda s: s.settings.pop("providers"))
        assert wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/iris/versions/1/ready").status_code == 200
        )
        config = httpx.get(f"{server.url}/v2/models/iris/versions/1/config").json()
        assert config["parameters"]["execution_providers"] == {"string_value": "cpu"}
        assert config["parameters"]["onnxruntime_threads"] == {"string_value": "1"}
        shown = httpx.get(
            f"{server.url}/admin/models/iris", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert shown["versions"][0]["providers"] == ["cpu"]
        assert shown["versions"][0]["threads"] == 1
    finally:
        assert server.stop() == 0
    assert "provider tensorrt not in this onnxruntime; using cpu" in server.stderr()


# -- threads that fit the box ------------------------------------------------------------------


def test_threads_fit_the_cgroup_quota_and_the_affinity(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    (cgroup / "kubepods" / "pod1").mkdir(parents=True)
    membership = tmp_path / "self-cgroup"
    membership.write_text("0::/kubepods/pod1\n")
    (cgroup / "cpu.max").write_text("max 100000\n")
    (cgroup / "kubepods" / "cpu.max").write_text("400000 100000\n")
    (cgroup / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(cgroup, membership) == 1.5  # the tightest on the way up
    (cgroup / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(cgroup, membership) == 4.0
    (cgroup / "kubepods" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(cgroup, membership) is None
    # cgroup v1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1, tmp_path / "none") == 0.5

    # two cores with two hardware threads each: 2 threads, not 4
    devices = tmp_path / "cpu"
    for cpu, core in enumerate((0, 0, 1, 1)):
        topology = devices / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores([0, 1, 2, 3], devices) == 2
    assert physical_cores([0, 1], devices) == 1
    assert physical_cores([0, 7], devices) == 2  # topology unreadable: each CPU a core

    affinity = len(os.sched_getaffinity(0))
    cpus, how = usable_cpus(v1)  # half a CPU: one thread
    assert cpus == 1
    assert how.startswith("a cgroup quota of 0.5 CPUs") or affinity == 1
    assert usable_cpus(tmp_path / "nothing", tmp_path / "no-devices")[0] == affinity
