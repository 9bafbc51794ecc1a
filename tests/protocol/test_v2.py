"""KServe V2 decoding, in-process: dtype rules that must hold whatever the transport."""

from __future__ import annotations

import json
import re
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
        ({"x": {"data": ["a", "b"]}}, "got strings"),
        ({"x": {"data": [[1], [2, 3]]}}, "not a rectangular array"),
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


def one_input(dtype: str, datatype: str, data: list[object]) -> tuple[bytes, Plan]:
    plan = Plan.of(Signature((TensorSpec("v", dtype, (None,)),), ()))
    tensor = {"name": "v", "shape": [len(data)], "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode(), plan


@pytest.mark.parametrize(
    ("dtype", "datatype", "data", "fragment"),
    [
        # integers: the range is checked exactly, never through a float that rounds
        ("int64", "INT64", [2**63], "out of range for int64"),
        ("int64", "INT64", [2**63, -1], "out of range for int64"),  # numpy reads a float64
        ("int64", "INT64", [-(2**63) - 1], "past 2**53"),  # orjson reads a rounded float
        ("int64", "INT64", [1.0, 2**60 + 1], "past 2**53"),  # numpy would round 2**60 + 1
        ("uint64", "UINT64", [2**64 - 1, 0.0], "out of range for uint64"),
        ("uint64", "UINT64", [2**64], "out of range for uint64"),
        ("uint64", "UINT64", [-1], "out of range for uint64"),
        ("int8", "INT8", [128], "out of range for int8"),
        # the NaN policy: V2 JSON is strict JSON; a string is never a number
        ("float32", "FP32", ["NaN"], "got strings"),
        ("float32", "FP32", ["1.5", 2.0], "got strings"),
        ("float32", "FP32", [None, 1.0], "not a rectangular array of one type"),
        ("float32", "FP32", [1e39], "out of range for float32"),
        ("float16", "FP16", [70000], "out of range for float16"),
        # booleans only for BOOL, even hidden among numbers
        ("float32", "FP32", [True, False], "got booleans"),
        ("float32", "FP32", [0.5, True], "got booleans"),
        ("float32", "FP32", [0.5] * 100 + [False], "got booleans"),
        ("int64", "INT64", [True, 2], "got booleans"),
    ],
)
def test_numbers_are_checked_exactly(dtype: str, datatype: str, data: list, fragment: str) -> None:
    body, plan = one_input(dtype, datatype, data)
    with pytest.raises(InputError, match=re.escape(fragment)):
        decode_request(body, None, plan)


@pytest.mark.parametrize(
    ("dtype", "datatype", "data"),
    [
        ("int64", "INT64", [2**63 - 1, -(2**63)]),
        ("uint64", "UINT64", [2**64 - 1, 0]),
        ("int64", "INT64", [2.0, 2**53]),  # whole floats within 2**53 are exact
        ("float32", "FP32", [3.4e38, -1e-50, 1, 0]),
        ("float64", "FP64", [1e308, 0.0, 1.0]),
        ("bool", "BOOL", [True, 0, 1]),
    ],
)
def test_numbers_in_range_keep_their_exact_value(dtype: str, datatype: str, data: list) -> None:
    body, plan = one_input(dtype, datatype, data)
    array = decode_request(body, None, plan).feeds["v"]
    assert array.dtype == np.dtype(dtype)
    assert array.tolist() == [np.dtype(dtype).type(v).item() for v in data]
