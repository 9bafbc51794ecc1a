"""Replicas sharing one repository: each reports the repository state it has applied (a metric
and the admin status), so one that lags is seen."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from mserve.cli.app import app
from typer.testing import CliRunner

from mserve.repository import LocalRepository
from tests.conftest import Server, wait_until

TOKEN = "test-admin-token-0123456789"
STATE_LINE = re.compile(
    r'mserve_model_state_applied\{model="(?P<model>[^"]+)",state="(?P<state>\w+)"\} 1\.0'
)


def applied(server: Server) -> dict[str, str]:
    """model -> the state it has applied, from the server's metrics."""
    found = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        match = STATE_LINE.match(line)
        if match:
            found[match["model"]] = match["state"]
    return found


def status(server: Server) -> dict[str, str]:
    reply = httpx.get(f"{server.url}/admin/models", headers={"Authorization": f"Bearer {TOKEN}"})
    (iris,) = reply.json()["models"]
    return {k: iris[k] for k in ("state_applied", "state_in_repository")}


def test_replicas_report_the_state_they_applied_and_a_lagging_one_shows(repo3: Path) -> None:
    env = {"MSERVE_ADMIN_TOKEN": TOKEN}
    fast = Server(repo3, env=env)
    slow = Server(repo3, "--poll-interval", "600", env=env)  # polls once, at start
    try:
        before = LocalRepository(repo3).state("iris").fingerprint()
        assert applied(fast) == applied(slow) == {"iris": before}

        promoted = CliRunner().invoke(app, ["promote", "iris", "2", "--repo", str(repo3)])
        assert promoted.exit_code == 0, promoted.stderr
        after = LocalRepository(repo3).state("iris").fingerprint()
        assert after != before
        assert wait_until(lambda: applied(fast) == {"iris": after})
        assert status(fast) == {"state_applied": after, "state_in_repository": after}
        assert applied(slow) == {"iris": before}  # it lags, and says so
        assert status(slow) == {"state_applied": before, "state_in_repository": after}
        shown = CliRunner().invoke(
            app, ["status", "--server", slow.url], env={"MSERVE_ADMIN_TOKEN": TOKEN}
        )
        assert f"iris: serves repository state {before}; the repository is at {after}" in (
            " ".join(shown.stdout.split())
        )
    finally:
        assert fast.stop() == 0
        assert slow.stop() == 0
