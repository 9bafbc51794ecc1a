"""PyTorch sources: in-process modules, torch.export files, TorchScript, factories with weights."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mserve
from mserve.errors import ConversionError, InputError, UntrustedSourceError, UsageError
from mserve.repository import LocalRepository

from ..conftest import ROOT, SAMPLES, Cli


class TwoTowers(torch.nn.Module):
    """Two inputs, two named outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, features: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.features(features)) + bias
        return {"logits": self.head(hidden), "hidden": hidden}


@pytest.fixture(scope="module")
def towers() -> TwoTowers:
    torch.manual_seed(0)
    return TwoTowers().eval()


@pytest.fixture
def towers_sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "features": rng.normal(size=(6, 4)).astype(np.float32),
        "bias": rng.normal(size=(6, 8)).astype(np.float32),
    }


def shapes(specs: Any) -> dict[str, tuple]:
    return {t.name: t.shape for t in specs}


def test_inputs_named_after_forward_outputs_after_the_dict(
    repo: Path, towers: TwoTowers, towers_sample: dict
) -> None:
    result = mserve.export(towers, name="towers", repo=repo, sample=towers_sample)
    manifest = result.manifest
    assert shapes(manifest.signature.inputs) == {"features": ("batch", 4), "bias": ("batch", 8)}
    assert shapes(manifest.signature.outputs) == {"logits": ("batch", 3), "hidden": ("batch", 8)}
    assert manifest.source["converter"] == "torch.onnx (dynamo)"
    assert manifest.parity["passed"] and set(manifest.parity["outputs"]) == {"logits", "hidden"}
    # the batch axis really is variable: run the published model on another batch size
    from mserve.runtime import ModelRunner

    runner = ModelRunner.open(result.path / "model.onnx")
    outputs = runner.run({"features": np.zeros((3, 4)), "bias": np.zeros((3, 8))})
    assert outputs["logits"].shape == (3, 3)


def test_a_single_row_sample_still_gives_a_variable_batch(
    repo: Path, towers: TwoTowers, towers_sample: dict
) -> None:
    one_row = {k: v[:1] for k, v in towers_sample.items()}
    result = mserve.export(towers, name="towers", repo=repo, sample=one_row)
    assert result.manifest.signature.inputs[0].shape == ("batch", 4)


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(dim=1, keepdim=True)


Stats = namedtuple("Stats", ["mean", "peak"])


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> Stats:
        return Stats(x.mean(dim=1), x.amax(dim=1))


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (Pair(), ["output_0", "output_1"]),
        (Named(), ["mean", "peak"]),
        (torch.nn.ReLU(), ["output"]),
    ],
)
def test_output_names_follow_what_forward_returns(
    repo: Path, module: Any, names: list[str]
) -> None:
    sample = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = mserve.export(module, name="m", repo=repo, sample=sample)
    assert [t.name for t in result.manifest.signature.outputs] == names


class Branchy(torch.nn.Module):
    """Data-dependent control flow: dynamo refuses it, the TorchScript exporter traces it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x * 3


def test_dynamo_failure_falls_back_to_the_torchscript_exporter_with_a_note(repo: Path) -> None:
    sample = np.ones((4, 2), dtype=np.float32)
    result = mserve.export(Branchy(), name="branchy", repo=repo, sample=sample)
    assert result.manifest.source["converter"] == "torch.onnx (torchscript)"
    assert any("dynamo exporter failed" in note for note in result.notes)
    assert result.manifest.parity["passed"]


def test_a_pt2_file_needs_trust_and_keeps_its_dynamic_batch(repo: Path) -> None:
    source, sample = SAMPLES / "iris_mlp.pt2", SAMPLES / "iris_sample.csv"
    with pytest.raises(UntrustedSourceError, match="unpickles parts of it"):
        mserve.export(source, name="mlp", repo=repo, sample=sample)
    result = mserve.export(source, name="mlp", repo=repo, sample=sample, trust_source=True)
    assert result.manifest.signature.inputs[0].shape == ("batch", 4)
    assert result.manifest.source["file"] == "iris_mlp.pt2"
    assert result.notes == []


def test_a_pt2_file_with_a_fixed_batch_says_so(
    repo: Path, tmp_path: Path, towers: TwoTowers, towers_sample: dict
) -> None:
    args = tuple(torch.from_numpy(towers_sample[k]) for k in ("features", "bias"))
    torch.export.save(torch.export.export(towers, args), tmp_path / "fixed.pt2")
    result = mserve.export(
        tmp_path / "fixed.pt2", name="fixed", repo=repo, sample=towers_sample, trust_source=True
    )
    assert result.manifest.signature.inputs[0].shape == (6, 4)
    assert any("batch size is fixed at 6" in note for note in result.notes)


def test_torchscript_needs_trust(repo: Path) -> None:
    source = SAMPLES / "iris_mlp_torchscript.pt"
    with pytest.raises(UntrustedSourceError):
        mserve.export(source, name="ts", repo=repo, sample=SAMPLES / "iris_sample.csv")
    result = mserve.export(
        source, name="ts", repo=repo, sample=SAMPLES / "iris_sample.csv", trust_source=True
    )
    assert result.manifest.source["converter"] == "torch.onnx (torchscript)"
    assert [t.name for t in result.manifest.signature.outputs] == ["output"]


def test_dict_returning_torchscript_names_the_way_out(
    repo: Path, tmp_path: Path, towers: Any
) -> None:
    with pytest.warns(DeprecationWarning):  # torch 2.13 deprecates TorchScript itself
        torch.jit.save(torch.jit.script(towers), tmp_path / "dict.pt")
    sample = {"features": np.zeros((2, 4), np.float32), "bias": np.zeros((2, 8), np.float32)}
    with pytest.raises(ConversionError, match="save a dict-returning model with torch.export.save"):
        mserve.export(tmp_path / "dict.pt", name="d", repo=repo, sample=sample, trust_source=True)


def test_a_state_dict_is_not_a_model(repo: Path) -> None:
    with pytest.raises(UsageError, match="use --from-python MODULE:FUNCTION --weights FILE"):
        mserve.export(
            SAMPLES / "iris_mlp_state_dict.pt",
            name="w",
            repo=repo,
            trust_source=True,
            sample=SAMPLES / "iris_sample.csv",
        )


def test_pytorch_models_need_a_sample(repo: Path, towers: TwoTowers) -> None:
    with pytest.raises(UsageError, match="PyTorch models need --sample"):
        mserve.export(towers, name="t", repo=repo)
    with pytest.raises(InputError, match="missing input 'bias'"):
        mserve.export(towers, name="t", repo=repo, sample={"features": np.zeros((2, 4))})
    assert not repo.exists()


def test_from_python_with_weights_through_the_cli(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    result = cli(
        "export",
        "--from-python",
        "sample_models.torch_mlp:build",
        "--weights",
        SAMPLES / "iris_mlp_state_dict.pt",
        "--sample",
        SAMPLES / "iris_sample.csv",
        "--name",
        "iris-torch",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    manifest = LocalRepository(cli.repo).manifest("iris-torch", data["version"])
    assert manifest.source["factory"] == "sample_models.torch_mlp:build"
    assert manifest.source["weights"]["file"] == "iris_mlp_state_dict.pt"
    predicted = json.loads(
        cli("predict", "iris-torch", "-i", "[6.7, 3.0, 5.2, 2.3]", "--json").stdout
    )
    assert np.argmax(predicted["outputs"]["probabilities"][0]) == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--from-python", "no_such_module:build"], "cannot import 'no_such_module'"),
        (["--from-python", "sample_models.torch_mlp:nope"], "has no function 'nope'"),
        (["--from-python", "sample_models.torch_mlp"], "expected MODULE:FUNCTION"),
        (
            ["--from-python", "sample_models.torch_mlp:build", "--weights", "missing.pt"],
            "does not exist",
        ),
        (
            [
                "--from-python",
                "sample_models.torch_mlp:build",
                "--weights",
                str(SAMPLES / "iris_sample.csv"),
            ],
            "cannot load weights from iris_sample.csv",
        ),
        (
            [str(SAMPLES / "iris_mlp.pt2"), "--from-python", "sample_models.torch_mlp:build"],
            "not both",
        ),
        ([], "give a SOURCE file or --from-python"),
        (
            [str(SAMPLES / "iris_classifier.onnx"), "--weights", "w.pt"],
            "--weights applies to PyTorch models",
        ),
    ],
)
def test_factory_and_weights_errors(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, args: list[str], fragment: str
) -> None:
    monkeypatch.chdir(ROOT)
    result = cli("export", *args, "--name", "m", "--sample", SAMPLES / "iris_sample.csv")
    assert result.exit_code == 2, result.stderr
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_wrong_weights_name_the_mismatch(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    torch.save({"hidden.weight": torch.zeros(2, 2)}, tmp_path / "bad.pt")
    with pytest.raises(UsageError, match="cannot load weights from bad.pt: Error"):
        mserve.export(
            from_python="sample_models.torch_mlp:build",
            weights=tmp_path / "bad.pt",
            name="m",
            repo=repo,
            sample=SAMPLES / "iris_sample.csv",
        )


class _WritesMarker:
    """Unpickling this creates ``path``: the stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.path)!r}, 'w').close()",)


def crafted_pt2(tmp_path: Path, marker: Path) -> Path:
    """iris_mlp.pt2 with one weight stored as a pickle that creates ``marker`` when loaded,
    as the torch.export archive format allows ("use_pickle")."""
    import pickle
    import zipfile

    crafted = tmp_path / "crafted.pt2"
    with (
        zipfile.ZipFile(SAMPLES / "iris_mlp.pt2") as original,
        zipfile.ZipFile(crafted, "w") as out,
    ):
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                config["config"]["hidden.weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif item.filename.endswith("data/weights/weight_0"):
                data = pickle.dumps(_WritesMarker(marker), protocol=2)
            out.writestr(item, data)
    return crafted


def test_a_crafted_pt2_runs_nothing_without_trust(cli: Cli, tmp_path: Path) -> None:
    from ..conftest import one_line_error

    marker = tmp_path / "pwned"
    crafted = crafted_pt2(tmp_path, marker)
    sample = SAMPLES / "iris_sample.csv"
    one_line_error(cli("export", crafted, "-n", "m", "--sample", sample), 2, "--trust-source")
    assert not marker.exists()
    # The file really does run its code when loaded: only the refusal kept it from running.
    cli("export", crafted, "-n", "m", "--trust-source", "--sample", sample)
    assert marker.exists()
