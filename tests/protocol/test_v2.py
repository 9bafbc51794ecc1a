"""KServe V2 decoding, in-process: dtype rules that must hold whatever the transport."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mserve.errors import InputError
from mserve.protocol.tensors import Plan
from mserve.protocol.v2 import decode_request
from mserve.signature import Signature, TensorSpec

SIGNATURE = Signature(
    (
        TensorSpec("n", "int64", (None,)),
        TensorSpec("flag", "bool", (None,)),
        TensorSpec("x", "float32", (None, 2)),
        TensorSpec("s", "string", (None,)),
    ),
    (),
)


def body(**overrides: object) -> bytes:
    tensors = {
        "n": {"name": "n", "shape": [2], "datatype": "INT64", "data": [1, 2]},
        "flag": {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        "x": {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[0.5, 1]]},
        "s": {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hé"]},
    }
    for name, change in overrides.items():
        tensors[name] = {**tensors[name], **change}  # type: ignore[dict-item]
    return json.dumps({"inputs": list(tensors.values())}).encode()


def test_json_values_become_the_signature_dtypes() -> None:
    feeds = decode_request(body(), None, Plan.of(SIGNATURE)).feeds
    assert feeds["n"].dtype == np.int64 and feeds["n"].tolist() == [1, 2]
    assert feeds["flag"].dtype == np.bool_ and feeds["x"].dtype == np.float32
    assert feeds["x"].tolist() == [[0.5, 1.0]] and feeds["s"].tolist() == ["hé"]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"n": {"data": [1.5, 2]}}, "fractional numbers"),
        ({"n": {"data": [1, 2**70]}}, "out of range"),
        ({"flag": {"data": [0, 2]}}, "booleans"),
        ({"s": {"data": [5]}}, "expects strings"),
        ({"x": {"data": ["a", "b"]}}, "not a flat or nested list"),
        ({"x": {"data": [[1], [2, 3]]}}, "not a flat or nested list"),
        ({"x": {"shape": [2, 1], "data": [1, 2]}}, "dimension 1 must be 2"),
    ],
)
def test_values_that_do_not_fit_are_refused(override: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        decode_request(body(**override), None, Plan.of(SIGNATURE))


def test_binary_tensors_keep_their_exact_bytes() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "n",
                    "shape": [2],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": 16},
                },
                {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, True]},
                {
                    "name": "x",
                    "shape": [1, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                },
                {
                    "name": "s",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 6},
                },
            ]
        }
    ).encode()
    raw = (
        np.array([7, -1], "<i8").tobytes()
        + np.array([[np.nan, 2]], "<f4").tobytes()
        + struct.pack("<I", 2)
        + b"ok"
    )
    feeds = decode_request(header + raw, len(header), Plan.of(SIGNATURE)).feeds
    assert feeds["n"].tolist() == [7, -1] and feeds["s"].tolist() == ["ok"]
    assert np.isnan(feeds["x"][0, 0]) and feeds["x"][0, 1] == 2
