"""The Internet checksum (RFC 1071), for the packets the node builds itself."""

from __future__ import annotations


def internet_checksum(data: bytes) -> int:
    """RFC 1071's ones' complement sum (IPv6 UDP's checksum, ICMP's).

    Computed as the data's big-endian integer modulo 0xFFFF (2**16 is 1 modulo
    0xFFFF, so that is the sum of its 16-bit words with the carries folded in),
    which runs in C: relayed datagrams each carry one over some 1,400 bytes."""
    if len(data) % 2:
        data += b"\0"
    number = int.from_bytes(data, "big")
    total = number % 0xFFFF
    if total == 0 and number:
        total = 0xFFFF  # ones' complement: a nonzero sum is never "+0"
    return ~total & 0xFFFF
