"""TAI64N timestamps, as carried in handshake initiations.

The nanoseconds are rounded down to 2**24 ns (about 16.8 ms), as wireguard-go
does, so an initiation does not leak the sender's precise clock.
"""

from __future__ import annotations

import struct

TIMESTAMP_LEN = 12
_TAI64_BASE = (1 << 62) + 10  # TAI64 label of the Unix epoch, plus 10 s of TAI offset
_WHITENER_MASK = (1 << 24) - 1
_PACK = struct.Struct(">QI")


def stamp(unix_time: float) -> bytes:
    """The TAI64N label of a Unix time given in seconds."""
    ns = round(unix_time * 1_000_000_000)
    seconds, nanos = divmod(ns, 1_000_000_000)
    return _PACK.pack(_TAI64_BASE + seconds, nanos & ~_WHITENER_MASK)


def is_after(a: bytes, b: bytes) -> bool:
    """Whether timestamp a is strictly later than b (both 12 bytes, big-endian)."""
    return a > b
