from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mserve import inputs
from mserve.errors import InputError, UsageError
from mserve.signature import TensorSpec

ONE_NAMES, TWO_NAMES = ["x"], ["a", "b"]


def test_inline_json_binds_to_the_single_input() -> None:
    assert inputs.bind(ONE_NAMES, inputs.parse_argument("[[1, 2]]")) == {"x": [[1, 2]]}


def test_objects_bind_by_name() -> None:
    assert inputs.bind(TWO_NAMES, inputs.parse_argument('{"a": [[1]], "b": [["x"]]}')) == {
        "a": [[1]],
        "b": [["x"]],
    }


def test_several_inputs_need_an_object() -> None:
    with pytest.raises(InputError, match=r"takes 2 inputs \(a, b\); give an object"):
        inputs.bind(TWO_NAMES, [[1]])


def test_invalid_json_is_one_line() -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        inputs.parse_argument("[[1, 2]")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(InputError, match="nests deeper"):
        inputs.parse_argument("[" * 100 + "]" * 100)


def test_csv_columns_bind_by_name_or_as_one_matrix(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n2,y\n")
    table = inputs.load_file(path)
    bound = inputs.bind(TWO_NAMES, table)
    assert bound["a"].tolist() == [[1.0], [2.0]] and bound["b"].tolist() == [["x"], ["y"]]
    numbers = tmp_path / "n.csv"
    numbers.write_text("f1,f2\n1,2\n3,4\n")
    assert inputs.bind(ONE_NAMES, inputs.load_file(numbers))["x"].dtype == np.float32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n", "header row and at least one data row"),
        ("a,a\n1,2\n", "unique, non-empty column names"),
        ("a,b\n1,2,3\n", "line 2 has 3 fields, not 2"),
    ],
)
def test_bad_csv_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        inputs.load_file(path)


def test_npy_and_npz_keep_dtypes(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(4, dtype=np.int32))
    np.savez(tmp_path / "x.npz", a=np.zeros(2, dtype=np.float64))
    assert inputs.load_file(tmp_path / "x.npy").dtype == np.int32
    assert inputs.load_file(tmp_path / "x.npz")["a"].dtype == np.float64


def test_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy cannot be read"):
        inputs.load_file(tmp_path / "obj.npy")


def test_unknown_or_missing_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unsupported input file type"):
        inputs.load_file(tmp_path / "x.parquet")
    with pytest.raises(UsageError, match="does not exist"):
        inputs.parse_argument(f"@{tmp_path / 'nope.json'}")


def test_json_file_and_sample_arrays(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps([[1, 2], [3, 4]]))
    sample = inputs.as_arrays(inputs.load_file(path))
    assert sample.dtype == np.float32 and sample.shape == (2, 2)


def test_bind_refuses_unknown_and_missing_inputs_in_the_servers_words() -> None:
    with pytest.raises(InputError, match="unknown input 'c'; the model takes 'a', 'b'"):
        inputs.bind(TWO_NAMES, {"a": [[1]], "b": [[2]], "c": [[3]]})
    with pytest.raises(InputError, match="missing input 'b'"):
        inputs.bind(TWO_NAMES, {"a": [[1]]})


def test_to_feeds_binds_and_coerces_to_the_signature() -> None:
    specs = [TensorSpec("a", "float32", (None, 2)), TensorSpec("b", "int64", (None, 1))]
    feeds = inputs.to_feeds(specs, {"a": [1, 2], "b": [[3.0]]})
    assert feeds["a"].dtype == np.float32 and feeds["a"].shape == (1, 2)
    assert feeds["b"].dtype == np.int64 and feeds["b"].tolist() == [[3]]
    with pytest.raises(InputError, match="input 'a' expects"):
        inputs.to_feeds(specs, {"a": [[1, 2, 3]], "b": [[3]]})
