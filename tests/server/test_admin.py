"""The admin API, the V2 repository extension and `mserve promote/rollback/retire/status` against
real server processes: auth, round trips, every refusal, promotes under load, restarts, offline
changes, several servers at once."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mserve.repository import LocalRepository

from ..conftest import Server, wait_until
from .conftest import InProcess

pytestmark = pytest.mark.slow

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"MSERVE_ADMIN_TOKEN": TOKEN}
BODY = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture
def admin_server(repo3: Path) -> Any:
    running = Server(repo3, env=ENV)
    yield running
    assert running.stop() == 0


def served(server: Server, label: str | None = None) -> str:
    path = "/v2/models/iris/infer" if label is None else f"/v1/models/iris/labels/{label}:predict"
    if label is None:
        reply = httpx.post(server.url + path, json=BODY)
        return str(reply.json().get("model_version", reply.status_code))
    return str(httpx.get(f"{server.url}/v1/models/iris/labels/{label}").json())


def admin(server: Server, operation: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/admin/models/iris/{operation}", json=body, headers=AUTH, timeout=60
    )


def history(repo: Path) -> list[dict[str, Any]]:
    return list(LocalRepository(repo).state("iris").history)


def test_auth_missing_wrong_and_right_token(admin_server: Server) -> None:
    url = admin_server.url
    for path, method in (("/admin/models", "GET"), ("/v2/repository/index", "POST")):
        missing = httpx.request(method, url + path)
        wrong = httpx.request(method, url + path, headers={"Authorization": "Bearer nope"})
        not_bearer = httpx.request(method, url + path, headers={"Authorization": TOKEN})
        assert missing.status_code == wrong.status_code == not_bearer.status_code == 401
        assert missing.json() == wrong.json() == not_bearer.json()  # nothing tells them apart
        assert missing.headers["www-authenticate"] == "Bearer"
        right = httpx.request(method, url + path, headers={"Authorization": f"bearer {TOKEN}"})
        assert right.status_code == 200
    assert "model_repository" in httpx.get(f"{url}/v2").json()["extensions"]
    assert TOKEN not in admin_server.stderr()


def test_without_a_token_the_admin_api_is_off(server: Server) -> None:
    for method, path in (
        ("GET", "/admin/models"),
        ("POST", "/admin/models/iris/promote"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/iris/unload"),
    ):
        reply = httpx.request(method, server.url + path, headers=AUTH)
        assert reply.status_code == 403, path
        assert "admin API is off" in reply.json()["error"]
    assert "model_repository" not in httpx.get(f"{server.url}/v2").json()["extensions"]


def test_serve_refuses_other_hosts_without_a_token_and_weak_tokens(
    run_mserve: Any, repo3: Path, tmp_path: Path
) -> None:
    no_token = {"MSERVE_ADMIN_TOKEN": ""}
    refused = run_mserve("serve", repo3, "--host", "0.0.0.0", env=no_token)
    assert refused.returncode == 2
    assert "--host 0.0.0.0 is reachable from other machines" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    short = run_mserve("serve", repo3, env={"MSERVE_ADMIN_TOKEN": "short"})
    assert short.returncode == 2 and "at least 16" in short.stderr
    missing = run_mserve("serve", repo3, "--admin-token-file", tmp_path / "nope", env=no_token)
    assert missing.returncode == 2 and "cannot read it" in missing.stderr


def test_promote_rollback_retire_round_trip_through_the_cli(
    admin_server: Server, run_mserve: Any, repo3: Path
) -> None:
    to_cli = {**ENV, "MSERVE_SERVER": admin_server.url}
    first = run_mserve("promote", "iris", "1", "--wait", "--actor", "ci-job-7", env=to_cli)
    assert first.returncode == 0, first.stderr
    assert "promote iris: 'stable' none -> 1" in first.stdout and "served after" in first.stdout
    assert served(admin_server) == "1"
    second = run_mserve("promote", "iris", "2", "--wait", "--json", env=to_cli)
    report = json.loads(second.stdout)
    assert second.returncode == 0 and report["ok"]
    [result] = report["results"]
    assert result["change"]["from"] == 1 and result["change"]["to"] == 2
    assert result["served_after_s"] is not None
    assert served(admin_server) == "2"
    back = run_mserve("rollback", "iris", "--wait", env=to_cli)
    assert back.returncode == 0 and "rollback iris: 'stable' 2 -> 1" in back.stdout
    assert served(admin_server) == "1"
    retired = run_mserve("retire", "iris", "2", env=to_cli)
    assert retired.returncode == 0, retired.stderr
    assert httpx.get(f"{admin_server.url}/v2/models/iris/versions/2").status_code == 404
    status = json.loads(run_mserve("status", "iris", "--json", env=to_cli).stdout)
    [model] = status["models"]
    assert model["labels"] == {"stable": 1}
    assert [v["version"] for v in model["versions"] if v["retired"]] == [2]
    assert [h["operation"] for h in model["history"]] == [
        "promote",
        "promote",
        "rollback",
        "retire",
    ]
    assert model["history"][0]["actor"] == "ci-job-7"
    table = run_mserve("status", env=to_cli).stdout
    assert "RETIRED" in table and "rollback iris: 'stable' 2 -> 1" in table
    on_disk = history(repo3)
    assert on_disk == model["history"]  # the audit trail is the repository's
    assert all(entry["via"].startswith("admin API on 127.0.0.1:") for entry in on_disk)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/admin/models/nosuch/promote", {"version": 1}, 404, "not found"),
        ("POST", "/admin/models/iris/promote", {"version": 9}, 404, "no version 9"),
        ("POST", "/admin/models/iris/promote", {"version": 3}, 409, "breaks clients of iris:2"),
        ("POST", "/admin/models/iris/retire", {"version": 2}, 409, "carries 'stable'"),
        ("POST", "/admin/models/iris/rollback", {}, 409, "no earlier version"),
        ("POST", "/admin/models/iris/rollback", {"label": "canary"}, 404, "no label 'canary'"),
        ("POST", "/admin/models/iris/promote", {}, 400, "field 'version' is required"),
        ("POST", "/admin/models/iris/promote", {"version": "2"}, 400, "must be a int"),
        ("POST", "/admin/models/iris/promote", {"version": True}, 400, "must be a int"),
        ("POST", "/admin/models/iris/promote", {"versoin": 2}, 400, "unknown field 'versoin'"),
        ("POST", "/admin/models/iris/promote", [2], 400, "must be a JSON object"),
        ("POST", "/admin/models/iris/promote", {"version": 2, "label": "a b"}, 400, "label"),
        ("GET", "/admin/models/iris/promote", None, 405, "use POST"),
        ("POST", "/admin/models", None, 405, "use GET"),
        ("POST", "/admin/models/iris/delete", {}, 404, "no route"),
        ("POST", "/admin/models/iris/retire", {"version": 1, "label": "x"}, 400, "unknown field"),
        ("POST", "/admin/models/iris/rollback", {"version": 1}, 400, "unknown field 'version'"),
        ("GET", "/admin/models/nosuch", None, 404, "not found"),
        (
            "POST",
            "/v2/repository/models/iris/load",
            {"parameters": {"config": "{}"}},
            400,
            "config",
        ),
        (
            "POST",
            "/v2/repository/models/iris/load",
            {"parameters": {"file:1/model.onnx": "x"}},
            400,
            "file:",
        ),
        ("POST", "/v2/repository/models/nosuch/load", {}, 404, "not found"),
        ("POST", "/v2/repository/elsewhere", {}, 404, "no route"),
    ],
)
def test_every_refusal_is_one_json_line_and_changes_nothing(
    refusing: tuple[InProcess, Path],
    method: str,
    path: str,
    body: Any,
    status: int,
    message: str,
) -> None:
    server, repo = refusing
    before = LocalRepository(repo).state("iris").to_dict()
    reply = server.request(method, path, json=body, headers=AUTH)
    assert reply.status_code == status, reply.text
    assert list(reply.json()) == ["error"] and message in reply.json()["error"]
    assert "\n" not in reply.json()["error"]
    assert LocalRepository(repo).state("iris").to_dict() == before


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory, three_versions: Path) -> Any:
    """One server in process for the refusals (none changes anything): 'stable' on iris:2."""
    repo = tmp_path_factory.mktemp("refusals") / "models"
    shutil.copytree(three_versions, repo)
    server = InProcess(repo, admin_token=TOKEN)
    promoted = server.request(
        "POST", "/admin/models/iris/promote", json={"version": 2}, headers=AUTH
    )
    assert promoted.status_code == 200, promoted.text
    return server, repo


def test_malformed_json_is_a_400(admin_server: Server) -> None:
    reply = httpx.post(
        f"{admin_server.url}/admin/models/iris/promote", content=b"{not json", headers=AUTH
    )
    assert reply.status_code == 400 and reply.json() == {"error": "the body is not valid JSON"}


def test_cli_exit_codes_refused_unreachable_and_bad_token(
    admin_server: Server, run_mserve: Any
) -> None:
    url = admin_server.url
    assert run_mserve("promote", "iris", "2", "--server", url, env=ENV).returncode == 0
    breaking = run_mserve("promote", "iris", "3", "--server", url, env=ENV)
    assert breaking.returncode == 1
    assert breaking.stderr.strip().endswith("--allow-breaking promotes it anyway")
    assert len(breaking.stderr.strip().splitlines()) == 1
    unknown = run_mserve("retire", "iris", "9", "--server", url, "--json", env=ENV)
    assert (
        unknown.returncode == 2  # not found: a usage error, as everywhere
        and "no version 9" in json.loads(unknown.stdout)["results"][0]["error"]
    )
    wrong = run_mserve("rollback", "iris", "--server", url, env={"MSERVE_ADMIN_TOKEN": "x" * 20})
    assert wrong.returncode == 3 and "admin token" in wrong.stderr
    no_token = run_mserve("rollback", "iris", "--server", url, env={"MSERVE_ADMIN_TOKEN": ""})
    assert no_token.returncode == 3 and "no admin token" in no_token.stderr
    down = run_mserve("promote", "iris", "2", "--server", "http://127.0.0.1:9", env=ENV)
    assert down.returncode == 3 and "cannot reach" in down.stderr
    both = run_mserve("promote", "iris", "2", "--server", url, "--repo", ".", env=ENV)
    assert both.returncode == 2 and "add --wait" in both.stderr  # --server: replicas to wait for
    allowed = run_mserve("promote", "iris", "3", "--server", url, "--allow-breaking", env=ENV)
    assert allowed.returncode == 0, allowed.stderr


def test_a_version_that_cannot_load_never_gets_the_label(admin_server: Server, repo3: Path) -> None:
    assert admin(admin_server, "promote", version=1).status_code == 200
    assert admin(admin_server, "promote", version=2).status_code == 200
    # iris:1 breaks after it was demoted; rollback (no gates) finds out while loading it.
    (repo3 / "iris" / "1" / "model.onnx").write_bytes(b"broken")
    reply = admin(admin_server, "rollback")
    assert reply.status_code == 503 and "cannot be loaded" in reply.json()["error"]
    assert LocalRepository(repo3).state("iris").labels == {"stable": 2}
    assert served(admin_server) == "2"


def test_a_label_moved_to_a_version_that_cannot_load_stays_where_it_was(
    admin_server: Server, repo3: Path
) -> None:
    """Another writer (a hand edit, another server) points 'stable' at a broken version: this
    server keeps serving the version the label named before, and says why."""
    assert admin(admin_server, "promote", version=1).status_code == 200
    (repo3 / "iris" / "2" / "model.onnx").write_bytes(b"broken")
    LocalRepository(repo3).update_state("iris", lambda s: s.labels.update(stable=2))
    assert wait_until(
        lambda: "sha256" in httpx.get(f"{admin_server.url}/v1/models/iris/versions/2").text
    )
    assert served(admin_server) == "1"
    status = httpx.get(f"{admin_server.url}/admin/models/iris", headers=AUTH).json()
    assert status["labels"] == {"stable": 1} and status["labels_in_repository"] == {"stable": 2}


def test_promotes_under_steady_load_drop_no_request(admin_server: Server) -> None:
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=admin_server.url) as client:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                reply = client.post("/v2/models/iris/infer", json=BODY)
                results.append((reply.status_code, str(reply.json().get("model_version"))))

    assert admin(admin_server, "promote", version=1).status_code == 200
    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        for version in (2, 1, 2, 1, 2):
            assert admin(admin_server, "promote", version=version).status_code == 200
            time.sleep(0.2)
        assert admin(admin_server, "rollback").status_code == 200
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(results) > 50
    assert {status for status, _ in results} == {200}
    assert {"1", "2"} <= {version for _, version in results}


def test_labels_and_retirement_survive_a_restart(repo3: Path) -> None:
    first = Server(repo3, env=ENV)
    try:
        assert admin(first, "promote", version=1).status_code == 200
        assert admin(first, "promote", version=2, label="canary").status_code == 200
        assert admin(first, "retire", version=3).status_code == 200
    finally:
        assert first.stop() == 0
    second = Server(repo3)  # no token needed to serve what model.json says
    try:
        assert served(second) == "1"
        canary = httpx.get(f"{second.url}/v1/models/iris/labels/canary").json()
        assert canary["model_version_status"][0]["version"] == "2"
        assert httpx.get(f"{second.url}/v2/models/iris/versions/3").status_code == 404
    finally:
        assert second.stop() == 0


def test_an_offline_promote_is_followed_by_a_running_server(
    admin_server: Server, run_mserve: Any, repo3: Path
) -> None:
    offline = run_mserve("promote", "iris", "1", "--repo", repo3, "--actor", "gitops")
    assert offline.returncode == 0, offline.stderr
    assert wait_until(lambda: served(admin_server) == "1")
    entry = history(repo3)[-1]
    assert entry["actor"] == "gitops" and entry["via"].startswith("mserve promote --repo on ")
    assert run_mserve("promote", "iris", "1", "--repo", repo3, "--wait").returncode == 2


def test_two_servers_at_once_and_one_unreachable(repo3: Path, run_mserve: Any) -> None:
    a, b = Server(repo3, env=ENV), Server(repo3, env=ENV)
    try:
        both = run_mserve(
            "promote",
            "iris",
            "2",
            "--server",
            a.url,
            "--server",
            b.url,
            "--wait",
            "--json",
            env=ENV,
        )
        report = json.loads(both.stdout)
        assert both.returncode == 0, both.stderr
        assert [r["target"] for r in report["results"]] == [a.url, b.url]
        assert report["results"][0]["change"]["changed"]
        assert not report["results"][1]["change"]["changed"]  # b's repository already said so
        assert served(a) == served(b) == "2"
        partly = run_mserve(
            "promote", "iris", "1", "--server", "http://127.0.0.1:9", "--server", b.url, env=ENV
        )
        assert partly.returncode == 3
        assert "http://127.0.0.1:9: cannot reach" in partly.stderr
        assert f"{b.url}: promote iris: 'stable' 2 -> 1" in partly.stdout
        assert wait_until(lambda: served(a) == "1")
    finally:
        assert a.stop() == 0 and b.stop() == 0


def test_concurrent_promotes_on_two_servers_are_serialized(repo3: Path) -> None:
    a, b = Server(repo3, env=ENV), Server(repo3, env=ENV)
    try:
        jobs = [(a if i % 2 else b, 1 + i % 2) for i in range(10)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda job: admin(job[0], "promote", version=job[1]), jobs))
        assert [r.status_code for r in replies] == [200] * 10
        entries = history(repo3)
        changed = [r.json()["change"] for r in replies if r.json()["change"]["changed"]]
        assert len(entries) == len(changed)  # every change the servers reported is recorded
        for before, after in itertools.pairwise(entries):
            assert after["from"] == before["to"]
        final = entries[-1]["to"]
        assert wait_until(lambda: served(a) == served(b) == str(final))
    finally:
        assert a.stop() == 0 and b.stop() == 0


def test_v2_repository_extension_with_tritonclient(admin_server: Server, repo3: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    http = httpclient.InferenceServerClient(admin_server.url.removeprefix("http://"))
    index = http.get_model_repository_index(headers=AUTH)
    assert {"name": "iris", "version": "3", "state": "READY", "reason": ""} in index
    http.unload_model("iris", headers=AUTH)
    assert LocalRepository(repo3).state("iris").unloaded
    assert not http.is_model_ready("iris")
    reply = httpx.post(f"{admin_server.url}/v2/models/iris/infer", json=BODY)
    assert reply.status_code == 404 and "unloaded" in reply.json()["error"]
    assert all(m["state"] == "UNAVAILABLE" for m in http.get_model_repository_index(headers=AUTH))
    grpc = grpcclient.InferenceServerClient(admin_server.grpc)
    with pytest.raises(InferenceServerException, match="admin token"):
        grpc.load_model("iris")
    grpc.load_model("iris", headers={"authorization": f"Bearer {TOKEN}"})
    assert http.is_model_ready("iris") and http.is_model_ready("iris", "3")
    index = grpc.get_model_repository_index(
        headers={"authorization": f"Bearer {TOKEN}"}, as_json=True
    )
    assert any(m.get("state") == "READY" for m in index["models"])
    assert [e["operation"] for e in history(repo3)] == ["unload", "load"]
    with pytest.raises(InferenceServerException):
        http.get_model_repository_index()


def test_admin_changes_to_a_read_only_repository_are_503_with_one_line(repo3: Path) -> None:
    """503, as services in read-only mode answer writes (see ReadOnlyRepository)."""
    from ..conftest import make_read_only, make_writable, permissions_enforced

    LocalRepository(repo3).update_state("iris", lambda s: s.labels.update(stable=1))
    make_read_only(repo3)
    server = Server(repo3, env=ENV, prefix=permissions_enforced())
    try:
        for operation, body in (
            ("promote", {"version": 2}),
            ("retire", {"version": 2}),
            ("rollback", {}),
        ):
            reply = admin(server, operation, **body)
            assert reply.status_code == 503, reply.text
            assert reply.json() == {
                "error": "the model repository is read-only: cannot change 'iris' "
                "(permission denied)"
            }
        assert LocalRepository(repo3).state("iris").labels == {"stable": 1}
        assert served(server) == "1"  # still serving
    finally:
        assert server.stop() == 0
        make_writable(repo3)
