"""WireGuard's four message types on the wire: sizes, offsets, packing.

Every message starts with a type byte and three zero bytes; all integers are
little-endian.
"""

from __future__ import annotations

import struct
from typing import Final

MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4

INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16
TRANSPORT_MIN_SIZE: Final = 32  # a keepalive: header and the empty payload's tag
MAX_DATAGRAM_SIZE: Final = 65535

COOKIE_NONCE_LEN: Final = 24

# The first four bytes of each message as one little-endian word: type, then zeros.
HEADER_INITIATION: Final = b"\x01\x00\x00\x00"
HEADER_RESPONSE: Final = b"\x02\x00\x00\x00"
HEADER_COOKIE_REPLY: Final = b"\x03\x00\x00\x00"
HEADER_TRANSPORT: Final = b"\x04\x00\x00\x00"

# Initiation: header(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1 mac2
INITIATION: Final = struct.Struct("<4sI32s48s28s16s16s")
# Response: header(4) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1 mac2
RESPONSE: Final = struct.Struct("<4sII32s16s16s16s")
# Cookie reply: header(4) receiver(4) nonce(24) cookie(16+16)
COOKIE_REPLY: Final = struct.Struct("<4sI24s32s")
# Transport header: header(4) receiver(4) counter(8), then the ciphertext
TRANSPORT_HEADER: Final = struct.Struct("<4sIQ")

assert INITIATION.size == INITIATION_SIZE
assert RESPONSE.size == RESPONSE_SIZE
assert COOKIE_REPLY.size == COOKIE_REPLY_SIZE


def mac1_offset(message_size: int) -> int:
    """Where mac1 starts in a handshake message (mac2 follows it, 16 bytes later)."""
    return message_size - 32


def is_wireguard(datagram: bytes) -> bool:
    """Whether a datagram looks like WireGuard by its first four bytes.

    The runtime uses this to sort the datagrams of a shared UDP socket: STUN and
    mesh messages never start with a type of 1-4 followed by three zero bytes.
    """
    return len(datagram) >= 4 and 1 <= datagram[0] <= 4 and datagram[1:4] == b"\x00\x00\x00"
