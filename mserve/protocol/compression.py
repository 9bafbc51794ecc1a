"""Compressed request bodies and messages (HTTP Content-Encoding, gRPC's grpc-encoding)."""

from __future__ import annotations

import zlib

from mserve.errors import InputError, PayloadTooLarge

WBITS = {"gzip": 31, "deflate": 15}


def inflate(data: bytes, encoding: str, limit: int, what: str = "body") -> bytes:
    """DATA decompressed: one whole gzip or deflate stream of at most LIMIT bytes."""
    inflater = zlib.decompressobj(wbits=WBITS[encoding])
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise InputError(f"the {what} is not valid {encoding} data") from None
    if len(inflated) > limit:
        raise PayloadTooLarge(f"the decompressed {what} is over the {limit}-byte limit")
    if not inflater.eof or inflater.unused_data:
        raise InputError(f"the {what} is not one whole {encoding} stream")
    return inflated
