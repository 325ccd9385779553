"""Relay frames: a member's WireGuard datagrams to another member, carried
through a relay member inside the coordination channel.

The relayed datagram is the end-to-end WireGuard ciphertext between the two
members; the relay sees which members talk and how much, never the content,
and cannot alter it undetected. The frames travel as coordination datagrams
(to COORDINATION_PORT on the overlay), so each hop is itself authenticated
by WireGuard: the relay knows which member sent a FORWARD, and a member
knows which relay a DELIVER came from.

    FORWARD  b"F" + destination's public key (32) + datagram    member -> relay
    DELIVER  b"D" + origin's public key (32) + datagram         relay -> member

A coordination message is a msgpack array (first byte 0x9X or 0xDC), so the
first byte tells frames and messages apart.
"""

from __future__ import annotations

from typing import NamedTuple

FORWARD = b"F"
DELIVER = b"D"
KEY_LEN = 32
HEADER = 1 + KEY_LEN
MAX_DATAGRAM = 1500  # a WireGuard datagram of the overlay's MTU, with room to spare


class Frame(NamedTuple):
    kind: bytes  # FORWARD or DELIVER
    key: bytes  # the destination (FORWARD) or the origin (DELIVER)
    datagram: bytes


def is_frame(payload: bytes) -> bool:
    return payload[:1] in (FORWARD, DELIVER)


def forward(destination: bytes, datagram: bytes) -> bytes:
    return FORWARD + destination + datagram


def deliver(origin: bytes, datagram: bytes) -> bytes:
    return DELIVER + origin + datagram


def parse(payload: bytes) -> Frame | None:
    """The frame, or None if it is malformed (too short, too long, not a frame)."""
    if not is_frame(payload) or not HEADER < len(payload) <= HEADER + MAX_DATAGRAM:
        return None
    return Frame(payload[:1], payload[1:HEADER], payload[HEADER:])
