"""Relay frames and the checksum every relayed packet carries."""

from __future__ import annotations

import random
import struct

from meshnode.mesh import relayframes
from meshnode.wireguard.checksum import internet_checksum

A, B = b"a" * 32, b"b" * 32


def _folded(data: bytes) -> int:
    """RFC 1071 the slow way: 16-bit words summed, carries folded back in."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_the_checksum_is_rfc_1071s() -> None:
    rng = random.Random(5)
    for size in [*range(40), 1279, 1280, 1400, 1500]:
        for _ in range(20):
            data = rng.randbytes(size)
            assert internet_checksum(data) == _folded(data), data
    for data in (b"", b"\0\0", b"\xff\xff", b"\xff\xff\xff\xff", b"\x00\x01\xff\xfe"):
        assert internet_checksum(data) == _folded(data), data


def test_frames_round_trip_and_refuse_what_is_not_one() -> None:
    datagram = b"\x04\0\0\0" + bytes(60)
    assert relayframes.parse(relayframes.forward(B, datagram)) == (b"F", B, datagram)
    assert relayframes.parse(relayframes.deliver(A, datagram)) == (b"D", A, datagram)
    assert relayframes.parse(b"F" + B) is None  # nothing to carry
    assert relayframes.parse(b"D" + A[:5]) is None
    assert relayframes.parse(b"F" + B + bytes(relayframes.MAX_DATAGRAM + 1)) is None
    assert relayframes.parse(b"\x93\x01\x02\x03") is None  # a coordination message
    assert not relayframes.is_frame(b"\x93") and relayframes.is_frame(b"F")
