"""Values to a tensor spec's dtype, exactly: what every input goes through, whether it comes
from a wire request (V2 JSON, TF Serving) or a local file.

Nothing changes a value on the way: strings or booleans are not read as numbers, fractions are
not cut to integers, integers out of range are refused (compared exactly, never through a
float that would round them), and a float that overflows the target is refused, not made
infinite. The checks are written for the server's hot path: each costs no more than a numpy
call or two on a small request (see ``_hides_booleans`` and ``_to_float``).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import numpy as np

from .errors import InputError
from .signature import TensorSpec, numpy_dtype

Array = np.ndarray[Any, Any]
SMALL = 64  # up to this many values, looking at each one's type is cheaper than numpy's calls
EXACT_FLOAT = 2**53  # past it, a float is not known to be the integer that was meant


def as_array(value: Any, where: str) -> Array:
    """Nested lists (or an array) as numpy reads them: numbers, booleans or strings, never a
    mixture (numpy would make an object array, or text of numbers mixed with strings)."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InputError(f"{where} is not a rectangular array") from None
    if (
        array.dtype.kind == "O"
        and array.size
        and not all(isinstance(v, str | bytes) for v in array.flat)
    ):
        raise InputError(f"{where} is not a rectangular array of one type")
    return array


def to_dtype(
    array: Array, spec: TensorSpec, where: str, lists: Any = None, *, booleans: bool = True
) -> Array:
    """ARRAY (from ``as_array``) as the spec's dtype, refusing whatever would change a value:
    strings or booleans for numbers, fractions for integers, integers out of range (checked
    exactly), floats that overflow the target. LISTS are the nested lists the array was read
    from, if it was (numpy reads a boolean among numbers as a 0 or a 1); BOOLEANS is False
    when they cannot hold one (a JSON text without a ``true`` or ``false`` token), which
    spares looking for them."""
    target = _numpy_dtype(spec.dtype)
    kind = array.dtype.kind
    if spec.dtype == "string":
        if array.size and kind not in "USO":
            raise InputError(f"{where} expects strings, got {array.dtype.name} values")
        return (
            np.vectorize(_as_text, otypes=[object])(array) if array.size else array.astype(object)
        )
    if kind in "USO":
        raise InputError(f"{where} expects {spec.dtype} values, got strings")
    if target.kind == "b":
        if kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
            raise InputError(f"{where} expects bool values, got fractional numbers")
        if kind in "iuf" and np.any((array != 0) & (array != 1)):
            raise InputError(f"{where} expects booleans (true/false or 0/1)")
        return array.astype(target, copy=False)
    if kind == "b" or (
        booleans and lists is not None and array.size and _hides_booleans(lists, array)
    ):
        raise InputError(f"{where} expects {spec.dtype} values, got booleans")
    if target.kind == "f":
        return _to_float(array, target, spec.dtype, where)
    if kind == "f" and lists is not None and float not in map(type, _leaves(lists, array)):
        # Only integers, which numpy read as floats (2**63 beside a 0 fits no one integer
        # dtype): read again as the target, where numpy refuses any out of its range.
        try:
            return np.asarray(lists, dtype=target)
        except OverflowError:
            raise InputError(f"{where}: a value is out of range for {spec.dtype}") from None
    if kind == "f":
        _check_integral(array, target, spec.dtype, where)
    elif array.size:  # integers as numpy read them (int64 or uint64): compared exactly
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise InputError(f"{where}: a value is out of range for {spec.dtype}")
    return array.astype(target, copy=False)


def _hides_booleans(lists: Any, array: Array) -> bool:
    """Whether LISTS, which numpy read as the numbers ARRAY, hold a boolean. One can only hide
    as a 0 or a 1, so in a larger array the types are looked at only when there is one."""
    if array.size > SMALL and not ((array == 0) | (array == 1)).any():
        return False
    return bool in map(type, _leaves(lists, array))


def _leaves(lists: Any, array: Array) -> Any:
    """The values of nested LISTS (which numpy read as ARRAY), in order."""
    if array.ndim == 1:
        return lists
    if array.ndim == 2:
        return itertools.chain.from_iterable(lists)
    return np.asarray(lists, dtype=object).ravel()


def _to_float(array: Array, target: np.dtype[Any], dtype: str, where: str) -> Array:
    """Numbers as a float dtype; a finite value past the target's range (1e39 for float32) is
    refused rather than made infinite. The cast itself reports it (numpy's overflow flag), so
    this costs no pass over the values; NaN and infinity given as such pass unchanged."""
    try:
        with np.errstate(over="raise"):
            return array.astype(target, copy=False)
    except FloatingPointError:
        raise InputError(f"{where}: a value is out of range for {dtype}") from None


def _check_integral(array: Array, target: np.dtype[Any], dtype: str, where: str) -> None:
    """Floats bound for an integer dtype: whole, in range (the bounds are powers of two, so
    exact as floats) and, for 64-bit integers, within 2**53, where a float is exact (a JSON
    integer past 2**64, or one mixed with floats, reaches here as a rounded float)."""
    if not array.size:
        return
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise InputError(f"{where} expects {dtype} values, got fractional numbers")
    info = np.iinfo(target)
    if array.min() < float(info.min) or array.max() >= float(info.max) + 1:
        raise InputError(f"{where}: a value is out of range for {dtype}")
    if np.abs(array).max() > EXACT_FLOAT:
        raise InputError(f"{where}: {dtype} values past 2**53 must be sent as JSON integers")


@cache
def _numpy_dtype(dtype: str) -> np.dtype[Any]:
    return numpy_dtype(dtype)


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
