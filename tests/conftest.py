"""Fixtures chained from small to large: data -> models -> files -> published versions."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from mserve.cli.app import app
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

import mserve

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"


@pytest.fixture(scope="session")
def iris_data() -> tuple[np.ndarray, np.ndarray]:
    iris = load_iris()
    return iris.data.astype(np.float32), iris.target


@pytest.fixture(scope="session")
def iris_pipeline(iris_data: tuple[np.ndarray, np.ndarray]) -> Any:
    x, y = iris_data
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


@pytest.fixture(scope="session")
def diabetes_forest() -> tuple[Any, np.ndarray]:
    data = load_diabetes()
    x = data.data.astype(np.float32)
    model = RandomForestRegressor(n_estimators=5, max_depth=3, random_state=0).fit(x, data.target)
    return model, x


@pytest.fixture(scope="session")
def iris_joblib(tmp_path_factory: pytest.TempPathFactory, iris_pipeline: Any) -> Path:
    path = tmp_path_factory.mktemp("sources") / "iris.joblib"
    joblib.dump(iris_pipeline, path)
    return path


@pytest.fixture(scope="session")
def iris_sample_npy(tmp_path_factory: pytest.TempPathFactory, iris_data: Any) -> Path:
    path = tmp_path_factory.mktemp("samples") / "iris.npy"
    np.save(path, iris_data[0][::15])
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "models"


def record_files(version_dir: Path) -> None:
    """Re-record the sha256 of every file of a version in its manifest, as an export would:
    for tests that replace a version's files on purpose and want them trusted."""
    import hashlib
    import json

    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {
        str(p.relative_to(version_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(version_dir.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest_path.write_text(json.dumps(manifest))


def publish_with_external_data(repo: Path, name: str, weights: list[float]) -> Path:
    """Publish ``name``:N, ``y = x + W`` with W (float32[4]) kept in ``model.onnx.data`` as a
    model too large to embed keeps it; returns the version's folder."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(weights, np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    source = repo.parent / f"{name}-source.onnx"
    onnx.save(model, source)
    version = mserve.export(source, name=name, repo=repo).path
    (version / "model.onnx").unlink()
    onnx.save_model(
        model,
        version / "model.onnx",
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    record_files(version)
    return version


@pytest.fixture
def published_iris(repo: Path, iris_pipeline: Any, iris_data: Any) -> Path:
    """``iris:1`` in a fresh repository, exported through the Python API."""
    mserve.export(iris_pipeline, name="iris", repo=repo, sample=iris_data[0][::10])
    return repo


class Cli:
    """Runs ``mserve`` in-process with CliRunner, stdout and stderr kept apart."""

    def __init__(self, repo: Path) -> None:
        self.runner = CliRunner()
        self.repo = repo

    def __call__(self, *args: str, repo: bool = True) -> Any:
        argv = [str(a) for a in args]
        env = {"MSERVE_REPO": str(self.repo)} if repo else {}
        return self.runner.invoke(app, argv, env=env, catch_exceptions=False)


def one_line_error(result: Any, code: int, fragment: str) -> None:
    """The CLI's one error shape: exit CODE and one line on stderr that names FRAGMENT."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mserve: error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def cli(repo: Path) -> Cli:
    return Cli(repo)


@pytest.fixture
def run_mserve() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the installed ``mserve`` command in a real process."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "mserve", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    return run


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real ``mserve serve`` process on a free loopback port."""

    def __init__(
        self,
        repo: Path | str,
        *args: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        prefix: tuple[str, ...] = (),
        log_dir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        folder = log_dir if log_dir is not None else Path(repo).parent
        self.log = folder / f"server-{self.port}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "mserve",
                "serve",
                str(repo),
                "--port",
                str(self.port),
                "--grpc-port",
                str(self.grpc_port),
                "--poll-interval",
                "0.2",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env={**os.environ, **(env or {})},
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_file.close()
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return int(self.process.returncode)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def permissions_enforced() -> tuple[str, ...]:
    """A command prefix under which file permission bits hold. Root ignores them through
    CAP_DAC_OVERRIDE (and CAP_FOWNER); setpriv drops both from the bounding set, so the child
    runs as root without them and a chmod'ed folder is really read-only to it."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no way to make a folder read-only")
    return (setpriv, "--bounding-set=-dac_override,-fowner")


def make_read_only(root: Path) -> None:
    """Take write permission off ``root`` and everything in it (see permissions_enforced)."""
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def wait_until(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def served_repo(
    tmp_path_factory: pytest.TempPathFactory, iris_pipeline: Any, iris_data: Any
) -> Path:
    """A repository with iris:1 (scikit-learn) and churn:1 (named columns with strings)."""
    repo = tmp_path_factory.mktemp("served") / "models"
    mserve.export(iris_pipeline, name="iris", repo=repo, sample=iris_data[0][::10])
    mserve.export(
        SAMPLES / "churn_pipeline.joblib",
        name="churn",
        repo=repo,
        sample=SAMPLES / "churn_sample.csv",
        trust_source=True,
    )
    return repo


@pytest.fixture(scope="module")
def server(served_repo: Path) -> Any:
    running = Server(served_repo)
    yield running
    assert running.stop() == 0


def export_iris(repo: Path, iris_data: Any, features: int = 4) -> int:
    """Publish the next iris version: a logistic regression on the first ``features`` columns."""
    from sklearn.linear_model import LogisticRegression

    x, y = iris_data
    model = LogisticRegression(max_iter=300).fit(x[:, :features], y)
    return mserve.export(model, name="iris", repo=repo, sample=x[:5, :features]).version


@pytest.fixture(scope="session")
def three_versions(tmp_path_factory: pytest.TempPathFactory, iris_data: Any) -> Path:
    """iris:1 and iris:2 take 4 features; iris:3 takes 3 (a breaking change)."""
    repo = tmp_path_factory.mktemp("lifecycle") / "models"
    export_iris(repo, iris_data)
    export_iris(repo, iris_data)
    export_iris(repo, iris_data, features=3)
    return repo


@pytest.fixture
def repo3(tmp_path: Path, three_versions: Path) -> Path:
    """A private copy of ``three_versions`` to change."""
    repo = tmp_path / "models"
    shutil.copytree(three_versions, repo)
    return repo


# -- an S3 API on loopback (moto's server), for repositories on object storage ----------------

SECRET = "mserve-test-secret-key-0123456789"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 API on a loopback port; the AWS_* variables point this process and its
    children at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update({**ENV, "AWS_ENDPOINT_URL_S3": endpoint})
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_ENDPOINT_URL_S3": "",
}


def new_bucket() -> str:
    import boto3

    name = f"models-{secrets.token_hex(4)}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
